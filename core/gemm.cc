#include "core/gemm.h"

#include <cblas.h>
#include <omp.h>

#include <atomic>
#include <bit>
#include <cstdio>
#include <vector>

#include "core/bf16.h"
#include "core/bf16_pair_gemm.h"
#include "core/check.h"
#include "core/onednn_gemm.h"

namespace openmoe {
namespace {

// Copies the (rows, cols) matrix at x (leading dimension ld) densely into *out, rounded to bf16.
const float* RoundedDenseCopy(const float* x, int64_t rows, int64_t cols, int64_t ld,
                              std::vector<float>* out) {
  out->resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) RoundToBf16(x + r * ld, out->data() + r * cols, cols);
  return out->data();
}

// Whether every element of the (rows, cols) matrix at x is already a bf16 value (low 16 bits
// zero), so rounding would change nothing. Stops at the first row that is not.
bool IsBf16Valued(const float* x, int64_t rows, int64_t cols, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * ld;
    uint32_t low = 0;
    for (int64_t i = 0; i < cols; ++i) low |= std::bit_cast<uint32_t>(row[i]) & 0xFFFFu;
    if (low != 0) return false;
  }
  return true;
}

// bf16 inputs, fp32 accumulation, by rounding copies of A and B and running sgemm on them. An
// operand that already holds bf16 values (activations the model stored rounded) is used as is.
void GemmBf16ByRounding(const GemmOp& op, int64_t m, int64_t n, int64_t k, const float* a,
                        int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  // Per-thread scratch: Gemm may be called from several threads at once.
  thread_local std::vector<float> a_scratch, b_scratch;
  const int64_t a_rows = op.transpose_a ? k : m, a_cols = op.transpose_a ? m : k;
  const int64_t b_rows = op.transpose_b ? n : k, b_cols = op.transpose_b ? k : n;
  if (!IsBf16Valued(a, a_rows, a_cols, lda)) {
    a = RoundedDenseCopy(a, a_rows, a_cols, lda, &a_scratch);
    lda = a_cols;
  }
  if (!IsBf16Valued(b, b_rows, b_cols, ldb)) {
    b = RoundedDenseCopy(b, b_rows, b_cols, ldb, &b_scratch);
    ldb = b_cols;
  }
  Gemm(op, m, n, k, a, lda, b, ldb, c, ldc);
}

GemmBackend DefaultBf16Backend() {
  if (CpuHasAvx512Bf16() && OneDnnGemmAvailable(GemmPrecision::kBf16)) return GemmBackend::kOneDnn;
  std::fprintf(stderr,
               "no AVX512-BF16: bf16 GEMM uses bf16-rounded inputs on OpenBLAS sgemm (same "
               "numerics, fp32 speed)\n");
  return GemmBackend::kOpenBlas;
}

// -1: not chosen yet (the bf16 default is chosen, and announced, on first use).
std::atomic<int> backend_override[2] = {-1, -1};

}  // namespace

GemmBackend ActiveGemmBackend(GemmPrecision precision) {
  const int chosen = backend_override[static_cast<int>(precision)].load(std::memory_order_relaxed);
  if (chosen >= 0) return static_cast<GemmBackend>(chosen);
  if (precision == GemmPrecision::kFp32) return GemmBackend::kOpenBlas;
  static const GemmBackend bf16_default = DefaultBf16Backend();
  return bf16_default;
}

void SetGemmBackend(GemmPrecision precision, GemmBackend backend) {
  OPENMOE_CHECK_MSG(backend != GemmBackend::kOneDnn || OneDnnGemmAvailable(precision),
                    "oneDNN has no %s matmul on this CPU",
                    precision == GemmPrecision::kBf16 ? "bf16" : "f32");
  backend_override[static_cast<int>(precision)].store(static_cast<int>(backend));
}

void Gemm(const GemmOp& op, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
          const float* b, int64_t ldb, float* c, int64_t ldc) {
  Gemm(GemmPrecision::kFp32, op, m, n, k, a, lda, b, ldb, c, ldc);
}

void Gemm(const GemmOp& op, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
          float* c) {
  Gemm(GemmPrecision::kFp32, op, m, n, k, a, b, c);
}

void Gemm(GemmPrecision precision, const GemmOp& op, int64_t m, int64_t n, int64_t k,
          const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // BLAS leaves C untouched for k == 0 only when beta == 1; make the semantics explicit.
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        c[i * ldc + j] = op.beta == 0.0f ? 0.0f : op.beta * c[i * ldc + j];
    return;
  }
  if (ActiveGemmBackend(precision) == GemmBackend::kOneDnn) {
    OneDnnGemm(precision, op, m, n, k, a, lda, b, ldb, c, ldc);
    return;
  }
  if (precision == GemmPrecision::kBf16) {
    GemmBf16ByRounding(op, m, n, k, a, lda, b, ldb, c, ldc);
    return;
  }
  cblas_sgemm(CblasRowMajor, op.transpose_a ? CblasTrans : CblasNoTrans,
              op.transpose_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), op.alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), op.beta, c,
              static_cast<blasint>(ldc));
}

void Gemm(GemmPrecision precision, const GemmOp& op, int64_t m, int64_t n, int64_t k,
          const float* a, const float* b, float* c) {
  const int64_t lda = op.transpose_a ? m : k;
  const int64_t ldb = op.transpose_b ? k : n;
  Gemm(precision, op, m, n, k, a, lda, b, ldb, c, n);
}

void Gemm(GemmPrecision precision, const GemmOp& op, int64_t m, int64_t n, int64_t k, GemmInput a,
          GemmInput b, float* c, int64_t ldc) {
  if (a.bf16 == nullptr && b.bf16 == nullptr) {
    Gemm(precision, op, m, n, k, a.f32, a.ld, b.f32, b.ld, c, ldc);
    return;
  }
  OPENMOE_CHECK_MSG(precision == GemmPrecision::kBf16, "a bf16 GEMM operand needs kBf16");
  if (m == 0 || n == 0 || k == 0) {
    // The k == 0 semantics of Gemm (C scaled by beta) read neither operand.
    Gemm(GemmPrecision::kBf16, op, m, n, 0, nullptr, 1, nullptr, 1, c, ldc);
    return;
  }
  if (ActiveGemmBackend(GemmPrecision::kBf16) == GemmBackend::kOneDnn) {
    OneDnnGemmBf16(op, m, n, k, a, b, c, ldc);
    return;
  }
  // Widened exactly to floats, bf16 operands hold bf16 values, which the rounding fallback uses
  // as they are.
  thread_local std::vector<float> a_wide, b_wide;
  auto widen = [](GemmInput x, int64_t rows, int64_t cols, std::vector<float>* wide) {
    if (x.bf16 == nullptr) return x;
    wide->resize(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      Bf16ToFloat(x.bf16 + r * x.ld, wide->data() + r * cols, cols);
    return GemmInput(wide->data(), cols);
  };
  const GemmInput af = widen(a, op.transpose_a ? k : m, op.transpose_a ? m : k, &a_wide);
  const GemmInput bf = widen(b, op.transpose_b ? n : k, op.transpose_b ? k : n, &b_wide);
  Gemm(GemmPrecision::kBf16, op, m, n, k, af.f32, af.ld, bf.f32, bf.ld, c, ldc);
}

void SetGemmThreads(int threads) {
  OPENMOE_CHECK(threads >= 1);
  openblas_set_num_threads(threads);
  omp_set_num_threads(threads);  // oneDNN's OpenMP; other threads sync in OneDnnGemm
}

int GemmThreads() { return openblas_get_num_threads(); }

std::string GemmPathName(GemmPrecision precision) {
  const bool onednn = ActiveGemmBackend(precision) == GemmBackend::kOneDnn;
  const char* blas = openblas_get_corename();
  if (precision == GemmPrecision::kFp32) {
    return onednn ? "oneDNN f32 matmul" : std::string("OpenBLAS sgemm (") + blas + " kernels)";
  }
  const std::string tiles =
      std::string("attention tiles on ") + Bf16PairKernelName(ActiveBf16PairKernel());
  if (!onednn) {
    return std::string(CpuHasAvx512Bf16() ? "" : "no AVX512-BF16: ") +
           "OpenBLAS sgemm on bf16-rounded copies, " + tiles + " (fp32 speed)";
  }
  GemmOp op;
  return "oneDNN bf16 matmul (" +
         OneDnnGemmImplementation(precision, op, 512, 512, 512, 512, 512, 512) + "), " + tiles;
}

}  // namespace openmoe
