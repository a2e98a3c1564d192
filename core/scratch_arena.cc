#include "core/scratch_arena.h"

#include <algorithm>
#include <cstdlib>
#include <new>

namespace openmoe {
namespace {
constexpr int64_t kAlignFloats = 16;  // 64 bytes
int64_t RoundUp(int64_t n) { return (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }
}  // namespace

void ScratchArena::Free::operator()(float* p) const { std::free(p); }

ScratchArena::Block ScratchArena::Allocate(int64_t floats) {
  void* p = std::aligned_alloc(64, static_cast<size_t>(std::max<int64_t>(floats, kAlignFloats)) *
                                       sizeof(float));
  if (p == nullptr) throw std::bad_alloc();
  return Block(static_cast<float*>(p));
}

float* ScratchArena::Take(int64_t n) {
  const int64_t size = RoundUp(std::max<int64_t>(n, 0));
  taken_ += size;
  high_water_ = std::max(high_water_, taken_);
  if (used_ + size <= capacity_) {
    float* p = block_.get() + used_;
    used_ += size;
    return p;
  }
  overflow_.emplace_back(Allocate(size), size);
  return overflow_.back().first.get();
}

void ScratchArena::Rewind(int64_t used, size_t overflow_blocks, int64_t taken) {
  used_ = used;
  overflow_.resize(overflow_blocks);
  taken_ = taken;
}

void ScratchArena::Reset() {
  Rewind(0, 0, 0);
  if (high_water_ > capacity_) {
    block_.reset();
    block_ = Allocate(high_water_);
    capacity_ = high_water_;
  }
}

int64_t ScratchArena::capacity_bytes() const {
  int64_t floats = capacity_;
  for (const auto& [block, size] : overflow_) floats += size;
  return floats * static_cast<int64_t>(sizeof(float));
}

int64_t ScratchArena::high_water_bytes() const {
  return high_water_ * static_cast<int64_t>(sizeof(float));
}

}  // namespace openmoe
