#include "model/rmsnorm.h"

#include <cmath>

#include "core/kernels.h"

namespace openmoe {

void RmsNormForward(const float* x, const float* scale, int64_t n, int64_t d, float eps, float* y,
                    float* rstd) {
  for (int64_t i = 0; i < n; ++i) {
    const float* xr = x + i * d;
    float* yr = y + i * d;
    const double mean_sq = SumSquares(xr, d) / static_cast<double>(d);
    const float r = static_cast<float>(1.0 / std::sqrt(mean_sq + eps));
    rstd[i] = r;
    for (int64_t j = 0; j < d; ++j) yr[j] = xr[j] * r * scale[j];
  }
}

// With r = (mean(x^2) + eps)^-1/2 and y_j = x_j r s_j:
//   dx_j = r s_j dy_j - (r^3 / d) x_j sum_k dy_k s_k x_k,   dscale_j = sum_rows dy_j x_j r.
void RmsNormBackward(const float* dy, const float* x, const float* scale, const float* rstd,
                     int64_t n, int64_t d, float* dx, float* dscale) {
  for (int64_t i = 0; i < n; ++i) {
    const float* dyr = dy + i * d;
    const float* xr = x + i * d;
    float* dxr = dx + i * d;
    const float r = rstd[i];
    double dot = 0.0;  // sum_k dy_k s_k x_k
    for (int64_t j = 0; j < d; ++j) dot += static_cast<double>(dyr[j] * scale[j]) * xr[j];
    const float c = static_cast<float>(dot * r * r * r / static_cast<double>(d));
    for (int64_t j = 0; j < d; ++j) {
      dxr[j] += r * scale[j] * dyr[j] - c * xr[j];
      dscale[j] += dyr[j] * xr[j] * r;
    }
  }
}

}  // namespace openmoe
