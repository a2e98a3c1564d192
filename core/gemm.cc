#include "core/gemm.h"

#include <cblas.h>

#include "core/check.h"

namespace openmoe {

void Gemm(const GemmOp& op, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
          const float* b, int64_t ldb, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // BLAS leaves C untouched for k == 0 only when beta == 1; make the semantics explicit.
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = op.beta == 0.0f ? 0.0f : op.beta * c[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, op.transpose_a ? CblasTrans : CblasNoTrans,
              op.transpose_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), op.alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), op.beta, c,
              static_cast<blasint>(ldc));
}

void Gemm(const GemmOp& op, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
          float* c) {
  const int64_t lda = op.transpose_a ? m : k;
  const int64_t ldb = op.transpose_b ? k : n;
  Gemm(op, m, n, k, a, lda, b, ldb, c, n);
}

void SetGemmThreads(int threads) {
  OPENMOE_CHECK(threads >= 1);
  openblas_set_num_threads(threads);
}

int GemmThreads() { return openblas_get_num_threads(); }

}  // namespace openmoe
