// Elementwise and row-wise kernels shared by several layers. Plain loops written so that g++
// auto-vectorises them; the heavy lifting of every layer is in GEMM (core/gemm.h).
#pragma once

#include <cmath>
#include <cstdint>

namespace openmoe {

// y[i] += x[i]  (n)
void AddInPlace(float* y, const float* x, int64_t n);
// y[i] += a * x[i]  (n)
void Axpy(float a, const float* x, float* y, int64_t n);
// sum_i x[i] * y[i] accumulated in double (n)
double Dot(const float* x, const float* y, int64_t n);
// sum_i x[i]^2 accumulated in double (n)
double SumSquares(const float* x, int64_t n);

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
