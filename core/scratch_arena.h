// ScratchArena: float scratch shared by every sub-block of a model, so a step holds one layer's
// worth of temporaries instead of one per layer.
//
// Take(n) hands out n floats (64-byte aligned, contents unspecified) that stay valid until the
// ScratchScope they were taken in ends, or until Reset(). Scopes nest: a callee opens its own,
// and what it took is reused by the next callee. The arena's block grows (at Reset only, when no
// pointer is out) to the largest total ever taken at once, so after the first step of a fixed
// shape nothing is allocated; before that, a Take that does not fit gets a block of its own.
// Single-threaded: one owner (the Decoder) passes it down; not collective.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace openmoe {

class ScratchArena {
 public:
  ScratchArena() = default;
  ScratchArena(const ScratchArena&) = delete;
  ScratchArena& operator=(const ScratchArena&) = delete;
  ScratchArena(ScratchArena&&) = default;
  ScratchArena& operator=(ScratchArena&&) = default;

  float* Take(int64_t n);
  // Releases everything taken; grows the block to the high-water mark if it was exceeded.
  void Reset();

  int64_t capacity_bytes() const;    // the block plus any overflow blocks now held
  int64_t high_water_bytes() const;  // the most held at once since construction

 private:
  friend class ScratchScope;
  struct Free {
    void operator()(float* p) const;
  };
  using Block = std::unique_ptr<float, Free>;
  static Block Allocate(int64_t floats);
  void Rewind(int64_t used, size_t overflow_blocks, int64_t taken);

  Block block_;
  int64_t capacity_ = 0;  // floats in block_
  int64_t used_ = 0;      // floats of block_ taken
  std::vector<std::pair<Block, int64_t>> overflow_;  // blocks taken beyond block_, with sizes
  int64_t taken_ = 0;       // floats taken now, block_ and overflow
  int64_t high_water_ = 0;  // most floats taken at once
};

// Everything taken from `arena` during this scope's life is released when it ends.
class ScratchScope {
 public:
  explicit ScratchScope(ScratchArena* arena)
      : arena_(arena),
        used_(arena->used_),
        overflow_(arena->overflow_.size()),
        taken_(arena->taken_) {}
  ~ScratchScope() { arena_->Rewind(used_, overflow_, taken_); }
  ScratchScope(const ScratchScope&) = delete;
  ScratchScope& operator=(const ScratchScope&) = delete;

 private:
  ScratchArena* arena_;
  int64_t used_;
  size_t overflow_;
  int64_t taken_;
};

}  // namespace openmoe
