// Row-major GEMM on top of OpenBLAS: C = alpha * op(A) @ op(B) + beta * C.
//
// op(A) is (M, K), op(B) is (K, N), C is (M, N). Leading dimensions default to the dense
// row-major ones; pass them explicitly for strided views (e.g. one head inside a (T, H*hd) matrix).
// Thread count is OpenBLAS's own (OPENBLAS_NUM_THREADS or SetGemmThreads).
#pragma once

#include <cstdint>

namespace openmoe {

struct GemmOp {
  bool transpose_a = false;
  bool transpose_b = false;
  float alpha = 1.0f;
  float beta = 0.0f;  // 0 overwrites C, 1 accumulates into C
};

void Gemm(const GemmOp& op, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
          const float* b, int64_t ldb, float* c, int64_t ldc);

// Dense row-major operands: lda/ldb/ldc follow from the shapes and transposes.
void Gemm(const GemmOp& op, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
          float* c);

void SetGemmThreads(int threads);
int GemmThreads();

}  // namespace openmoe
