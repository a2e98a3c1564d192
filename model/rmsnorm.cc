#include "model/rmsnorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/kernels.h"
#include "core/parallel_for.h"

namespace openmoe {
namespace {
// Rows per ParallelFor range: enough work (16 x d elements) to be worth a thread.
int64_t MinRows(int64_t d) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1)); }
// The backward sums dscale over rows in fixed blocks of this many, then the blocks in order, so
// the result does not depend on how many threads ran them.
constexpr int64_t kScaleBlockRows = 64;
}  // namespace

void RmsNormForward(const float* x, const float* scale, int64_t n, int64_t d, float eps, float* y,
                    float* rstd) {
  ParallelFor(n, MinRows(d), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* xr = x + i * d;
      float* yr = y + i * d;
      const double mean_sq = SumSquares(xr, d) / static_cast<double>(d);
      const float r = static_cast<float>(1.0 / std::sqrt(mean_sq + eps));
      rstd[i] = r;
      for (int64_t j = 0; j < d; ++j) yr[j] = xr[j] * r * scale[j];
    }
  });
}

// With r = (mean(x^2) + eps)^-1/2 and y_j = x_j r s_j:
//   dx_j = r s_j dy_j - (r^3 / d) x_j sum_k dy_k s_k x_k,   dscale_j = sum_rows dy_j x_j r.
void RmsNormBackward(const float* dy, const float* x, const float* scale, const float* rstd,
                     int64_t n, int64_t d, float* dx, float* dscale) {
  const int64_t blocks = (n + kScaleBlockRows - 1) / kScaleBlockRows;
  std::vector<float> partial(static_cast<size_t>(blocks * d), 0.0f);  // (blocks, d)
  ParallelFor(blocks, std::max<int64_t>(1, MinRows(d) / kScaleBlockRows),
              [&](int64_t block_begin, int64_t block_end) {
                for (int64_t i = block_begin * kScaleBlockRows;
                     i < std::min(n, block_end * kScaleBlockRows); ++i) {
                  const float* dyr = dy + i * d;
                  const float* xr = x + i * d;
                  float* dxr = dx + i * d;
                  float* ds = partial.data() + i / kScaleBlockRows * d;
                  const float r = rstd[i];
                  double dot = 0.0;  // sum_k dy_k s_k x_k
                  for (int64_t j = 0; j < d; ++j)
                    dot += static_cast<double>(dyr[j] * scale[j]) * xr[j];
                  const float c = static_cast<float>(dot * r * r * r / static_cast<double>(d));
                  for (int64_t j = 0; j < d; ++j) {
                    dxr[j] += r * scale[j] * dyr[j] - c * xr[j];
                    ds[j] += dyr[j] * xr[j] * r;
                  }
                }
              });
  for (int64_t b = 0; b < blocks; ++b) AddInPlace(dscale, partial.data() + b * d, d);
}

}  // namespace openmoe
