#include "core/kernels.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace openmoe {

void AddInPlace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void Axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

double Dot(const float* x, const float* y, int64_t n) {
  return LaneSum(n, [x, y](int64_t i) { return static_cast<double>(x[i]) * y[i]; });
}

double SumSquares(const float* x, int64_t n) { return Dot(x, x, n); }

int64_t FirstNonFinite(const float* x, int64_t n) {
  // A float is NaN or infinite iff its exponent bits are all ones. The OR over a block is an
  // integer reduction, which vectorises; only a bad block is searched element by element.
  constexpr uint32_t kExponent = 0x7f800000u;
  constexpr int64_t kBlock = 4096;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t end = std::min(n, b + kBlock);
    uint32_t bad = 0;
    for (int64_t i = b; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, x + i, sizeof(bits));
      bad |= static_cast<uint32_t>((bits & kExponent) == kExponent);
    }
    if (bad == 0) continue;
    for (int64_t i = b; i < end; ++i)
      if (!std::isfinite(x[i])) return i;
  }
  return -1;
}

void SoftmaxRows(const float* x, int64_t rows, int64_t cols, float* y, float* lse) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, xr[c]);
    float sum = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      yr[c] = std::exp(xr[c] - mx);
      sum += yr[c];
    }
    const float inv = 1.0f / sum;
    for (int64_t c = 0; c < cols; ++c) yr[c] *= inv;
    if (lse != nullptr) lse[r] = mx + std::log(sum);
  }
}

}  // namespace openmoe
