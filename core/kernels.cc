#include "core/kernels.h"

#include <algorithm>
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
