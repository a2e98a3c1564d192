// Elementwise and row-wise kernels shared by several layers. Plain loops written so that g++
// auto-vectorises them; the heavy lifting of every layer is in GEMM (core/gemm.h).
#pragma once

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

// Softmax of each row of x (rows, cols) into y (rows, cols); y may alias x. Returns nothing;
// if lse is non-null it receives each row's logsumexp (rows).
void SoftmaxRows(const float* x, int64_t rows, int64_t cols, float* y, float* lse);

}  // namespace openmoe
