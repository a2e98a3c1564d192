// Elementwise and row-wise kernels shared by several layers. Plain loops written so that g++
// auto-vectorises them; the heavy lifting of every layer is in GEMM (core/gemm.h).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace openmoe {

// sum_i term(i) for i in [0, n), in double. Without -ffast-math the compiler may not reorder a
// single running sum, so it would neither vectorise nor hide the add latency; independent partial
// sums let it do both. `term` may have side effects on index i only.
template <typename Term>
double LaneSum(int64_t n, Term term) {
  constexpr int kLanes = 8;
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += term(i + k);
  double total = 0.0;
  for (; i < n; ++i) total += term(i);
  for (int k = 0; k < kLanes; ++k) total += acc[k];
  return total;
}

// y[i] += x[i]  (n)
void AddInPlace(float* y, const float* x, int64_t n);
// y[i] += a * x[i]  (n)
void Axpy(float a, const float* x, float* y, int64_t n);
// sum_i x[i] * y[i] accumulated in double (n)
double Dot(const float* x, const float* y, int64_t n);
// sum_i x[i]^2 accumulated in double (n)
double SumSquares(const float* x, int64_t n);
// Index of the first NaN or infinity in x (n), or -1 when every value is finite.
int64_t FirstNonFinite(const float* x, int64_t n);

inline float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float Silu(float x) { return x * Sigmoid(x); }
// d silu(x) / dx
inline float SiluGrad(float x) {
  const float s = Sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

// e^x for x <= 0 in plain float arithmetic, within about 1 ulp: Cephes' expf, x = n ln2 + r with
// |r| <= ln2 / 2, a polynomial for e^r and 2^n built from exponent bits. std::exp is a libm call
// the compiler cannot vectorise without -ffast-math, and this runs on every logit and every
// attention score of every step.
inline float ExpNonPositive(float x_in) {
  // Clamping keeps 2^n a normal float. Below the clamp (e^-87 = 1.6e-38) the result is 0, where
  // std::exp gives a denormal: either is nothing next to a row sum that is >= 1.
  constexpr float kMin = -87.0f;
  const float x = std::max(x_in, kMin);
  // Round to nearest by adding and removing 1.5 * 2^23 (std::nearbyint would not vectorise).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln 2 in two parts
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const float e = y * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return x_in < kMin ? 0.0f : e;
}


// Softmax of each row of x (rows, cols) into y (rows, cols); y may alias x. Returns nothing;
// if lse is non-null it receives each row's logsumexp (rows).
void SoftmaxRows(const float* x, int64_t rows, int64_t cols, float* y, float* lse);

}  // namespace openmoe
