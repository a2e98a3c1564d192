#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_join.h"
#include "core/check.h"

namespace openmoe {

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    OPENMOE_CHECK(d >= 0);
    n *= d;
  }
  return n;
}

void Tensor::Free::operator()(float* p) const { std::free(p); }

Tensor::Tensor(const Tensor& other) { *this = other; }

Tensor& Tensor::operator=(const Tensor& other) {
  if (this == &other) return *this;
  ResizeUninitialized(other.shape_);
  if (size_ > 0) std::memcpy(data(), other.data(), size_ * sizeof(float));
  return *this;
}

void Tensor::ResizeUninitialized(std::vector<int64_t> shape) {
  const int64_t n = NumElements(shape);
  if (n > capacity_) {
    // The contents are not kept: the old block goes first, so growing never holds both (a
    // transient that would add to the process's peak).
    data_.reset();
    capacity_ = 0;
    // Round the byte count up to the alignment, as aligned_alloc requires.
    const size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
    float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
    // Thrown, not aborted: `openmoe` turns it into one line and exit 1 (launch/main.cc).
    if (p == nullptr) throw std::bad_alloc();
    data_.reset(p);
    capacity_ = n;
  }
  shape_ = std::move(shape);
  size_ = n;
}

void Tensor::Resize(std::vector<int64_t> shape) {
  ResizeUninitialized(std::move(shape));
  Zero();
}

void Tensor::Zero() {
  if (size_ > 0) std::memset(data(), 0, size_ * sizeof(float));
}

std::string Tensor::ShapeString() const { return "(" + absl::StrJoin(shape_, ", ") + ")"; }

}  // namespace openmoe
