// Row-major GEMM: C = alpha * op(A) @ op(B) + beta * C, on OpenBLAS (fp32) and oneDNN (bf16).
//
// op(A) is (M, K), op(B) is (K, N), C is (M, N). Leading dimensions default to the dense
// row-major ones; pass them explicitly for strided views (e.g. one head inside a (T, H*hd) matrix).
// Thread count is OpenBLAS's own (OPENBLAS_NUM_THREADS or SetGemmThreads); oneDNN follows it.
// Safe to call from several threads at once.
//
// Precision: kFp32 is plain sgemm. kBf16 is what a TPU v3 MXU computes: every element of op(A) and
// op(B) rounded to bf16 (round-to-nearest-even, core/bf16.h), products accumulated in fp32, C and
// alpha/beta in fp32 exactly as for kFp32. The inputs are not modified (the rounding goes to
// scratch). Results equal an fp32 GEMM of the bf16-rounded inputs up to summation order.
//
// Backends (GemmBackend): kFp32 runs on OpenBLAS sgemm (oneDNN's f32 matmul measured no faster
// here, see README "Benchmarks"). kBf16 runs on oneDNN's bf16 matmul (core/onednn_gemm.h) when the
// CPU has AVX512-BF16; otherwise it prints one line once to stderr and runs sgemm on bf16-rounded
// copies of A and B: the same numerics at fp32 speed. One difference between the two: the
// AVX512-BF16 dot product (VDPBF16PS) flushes subnormals (bf16 inputs and fp32 partial sums with
// |x| < 2^-126) to zero; the sgemm fallback keeps them.
#pragma once

#include <cstdint>
#include <string>

namespace openmoe {

enum class GemmPrecision { kFp32, kBf16 };

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

// The same with an explicit precision (kFp32 is the overloads above).
void Gemm(GemmPrecision precision, const GemmOp& op, int64_t m, int64_t n, int64_t k,
          const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc);
void Gemm(GemmPrecision precision, const GemmOp& op, int64_t m, int64_t n, int64_t k,
          const float* a, const float* b, float* c);

// One GEMM operand, row-major with leading dimension ld: floats, or (kBf16 only) bf16 storage,
// the upper halves of floats. BF16 keeps activations that only feed GEMMs that way: the values
// the GEMM would round them to, in half the bytes, read by oneDNN without a rounded copy.
struct GemmInput {
  GemmInput(const float* x, int64_t leading) : f32(x), ld(leading) {}
  GemmInput(const uint16_t* x, int64_t leading) : bf16(x), ld(leading) {}
  // The same matrix from row r on.
  GemmInput FromRow(int64_t r) const {
    return f32 != nullptr ? GemmInput(f32 + r * ld, ld) : GemmInput(bf16 + r * ld, ld);
  }
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
  int64_t ld = 0;
};
// Gemm with operands of either kind: the same result, bit for bit, as Gemm(precision) given the
// bf16 operands' values as floats (the fallback backend widens them exactly). An operand stored as
// bf16 needs kBf16.
void Gemm(GemmPrecision precision, const GemmOp& op, int64_t m, int64_t n, int64_t k, GemmInput a,
          GemmInput b, float* c, int64_t ldc);

void SetGemmThreads(int threads);
int GemmThreads();

// kOpenBlas for kBf16 means sgemm on bf16-rounded copies of A and B.
enum class GemmBackend { kOpenBlas, kOneDnn };
// The backend this precision runs on (the defaults above unless SetGemmBackend changed it).
GemmBackend ActiveGemmBackend(GemmPrecision precision);
// For benchmarks and tests: route a precision to a backend. Checks that oneDNN implements it on
// this CPU (OneDnnGemmAvailable in core/onednn_gemm.h). Not for use while GEMMs run.
void SetGemmBackend(GemmPrecision precision, GemmBackend backend);

// One line naming what runs this precision's GEMMs here, for run headers and benchmark output
// (so a figure from the slow fallback is not mistaken for a result): e.g. "oneDNN bf16 matmul
// (brg:avx512_core_amx_bf16), attention tiles on VDPBF16PS" or "no AVX512-BF16: sgemm on
// bf16-rounded copies, attention tiles in a portable fp32 loop (fp32 speed)".
std::string GemmPathName(GemmPrecision precision);

}  // namespace openmoe
