// oneDNN matmul as a Gemm backend (core/gemm.h routes to it; include this directly only to
// benchmark or test the backend itself).
//
// Same contract as Gemm: row-major C = alpha * op(A) @ op(B) + beta * C with leading dimensions.
// kFp32 passes A and B to oneDNN as they are (strides in the memory descriptors); kBf16 first
// converts op's A and B into dense per-thread bf16 scratch with RNE (core/bf16.h), then runs a bf16
// x bf16 -> f32 matmul (fp32 accumulation). Transposes and lda/ldc become strides, alpha an output
// scale, beta != 0 a sum post-op with scale beta (beta == 0 overwrites C, NaN garbage included).
// Callers handle m, n or k == 0 (Gemm does).
//
// Each of m, n, k is split into at most three pieces (a multiple of 128, a multiple of 16, the
// rest; k pieces accumulate into C), so the many row counts a training run sees (tokens per
// expert change every step) share a bounded set of primitive shapes. Primitives are created once
// per (precision, piece m, n, k, transposes, lda, ldb, ldc, alpha, beta, threads) and cached for
// the life of the process; lookups take a mutex, execution does not
// (each call brings its own scratchpad and stream), so any number of threads may call at once.
// Threads: oneDNN here runs on OpenMP; every call sets the calling thread's OpenMP thread count to
// GemmThreads(), so oneDNN follows SetGemmThreads like OpenBLAS does.
#pragma once

#include <cstdint>
#include <string>

#include "core/gemm.h"

namespace openmoe {

// Whether oneDNN implements this precision on this CPU (its bf16 matmul needs AVX-512; it is
// emulated without AVX512-BF16). Checked once by creating a small primitive.
bool OneDnnGemmAvailable(GemmPrecision precision);

void OneDnnGemm(GemmPrecision precision, const GemmOp& op, int64_t m, int64_t n, int64_t k,
                const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc);

// kBf16 with operands of either kind (core/gemm.h's GemmInput): those stored as bf16 are read in
// place, float ones converted into dense per-thread bf16 scratch.
void OneDnnGemmBf16(const GemmOp& op, int64_t m, int64_t n, int64_t k, GemmInput a, GemmInput b,
                    float* c, int64_t ldc);

// oneDNN's name for the implementation it picked for this problem's largest piece (e.g.
// "brg:avx512_core_bf16", "gemm:jit"); creates and caches the primitive if needed.
std::string OneDnnGemmImplementation(GemmPrecision precision, const GemmOp& op, int64_t m,
                                     int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc);

struct OneDnnGemmCacheStats {
  int64_t primitives_created = 0;  // cache misses
  int64_t cache_hits = 0;
};
OneDnnGemmCacheStats GetOneDnnGemmCacheStats();

}  // namespace openmoe
