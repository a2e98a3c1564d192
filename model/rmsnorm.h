// RMSNorm in fp32: y = x * rsqrt(mean(x^2) + eps) * scale. No mean subtraction, no bias.
//
// Backward functions in model/ accumulate: they add into dx and into parameter gradients.
#pragma once

#include <cstdint>

namespace openmoe {

// x, y: (n, d); scale: (d); rstd: (n), written, kept for the backward.
void RmsNormForward(const float* x, const float* scale, int64_t n, int64_t d, float eps, float* y,
                    float* rstd);

// dy, x: (n, d); rstd: (n) from the forward. dx (n, d) += ..., dscale (d) += ...
void RmsNormBackward(const float* dy, const float* x, const float* scale, const float* rstd,
                     int64_t n, int64_t d, float* dx, float* dscale);

}  // namespace openmoe
