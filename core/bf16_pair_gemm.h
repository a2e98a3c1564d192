// Small bf16 GEMMs on operands packed in pairs: the form the AVX512-BF16 dot product (VDPBF16PS)
// reads, for callers that multiply the same operands many times in tiles (blocked attention),
// where packing once beats a library call per tile (oneDNN's per-call overhead and rounded copies
// cost more than a 64 x 64 x 64 product).
//
// A pair holds two bf16 values in one uint32: the element at even index 2p in the low 16 bits, the
// one at 2p + 1 in the high 16 bits (0 when the dimension is odd and 2p + 1 is past its end). The
// packers round fp32 inputs to bf16 with round-to-nearest-even (core/bf16.h), so an operand that
// already holds bf16 values is packed exactly. All matrices are row-major with leading dimensions.
//
// Bf16PairGemm computes C (m, n) = A B, or C += A B, where A is (m, k) and B is (k, n), given as
//   a: (m, kp) pairs along k: a[i][p] = (A[i][2p], A[i][2p+1]), leading dimension lda;
//   b: (kp, n) pairs along k: b[p][j] = (B[2p][j], B[2p+1][j]), leading dimension ldb;
// with kp = ceil(k / 2). Products are exact in fp32 and accumulated in fp32 (the MXU's and
// Gemm(kBf16)'s numerics up to summation order). Kernels, the fastest this build and CPU have:
//   kAmx         AMX tiles (TDPBF16PS, 16 x 16 x 32 per instruction; Intel since Sapphire Rapids)
//   kAvx512Bf16  VDPBF16PS on zmm registers (AVX512-BF16: Cooper Lake, Zen 4, ...)
//   kPortable    a plain fp32 loop over the same products
// The first two treat subnormal inputs and sums as zero, as oneDNN's bf16 matmul does. The pair
// layouts are the bytes AMX reads: a's rows are bf16 rows (A tiles), b's rows are pairs of rows
// (VNNI B tiles). Single-threaded; callers parallelise over tiles or heads, and any number of
// threads may call at once.
#pragma once

#include <cstdint>

namespace openmoe {

enum class Bf16PairKernel { kAmx, kAvx512Bf16, kPortable };

// Whether this build and CPU can run `kernel` (kPortable always; kAmx also needs the OS to grant
// the process AMX tile state, asked once).
bool Bf16PairKernelAvailable(Bf16PairKernel kernel);
// The kernel Bf16PairGemm runs: the fastest available unless SetBf16PairKernel chose another.
Bf16PairKernel ActiveBf16PairKernel();
// For tests and benchmarks: run `kernel` (checked available). Not while GEMMs run.
void SetBf16PairKernel(Bf16PairKernel kernel);
// "AMX", "VDPBF16PS" or "portable fp32 loop".
const char* Bf16PairKernelName(Bf16PairKernel kernel);

void Bf16PairGemm(int64_t m, int64_t n, int64_t kp, const uint32_t* a, int64_t lda,
                  const uint32_t* b, int64_t ldb, float* c, int64_t ldc, bool accumulate);

// The four ways a row-major fp32 matrix x (rows, cols), leading dimension ld, becomes pairs:
// out (rows, ceil(cols/2)): out[r][p] = (x[r][2p], x[r][2p+1]). A = x, k along columns.
void PackPairsAlongRows(const float* x, int64_t ld, int64_t rows, int64_t cols, uint32_t* out,
                        int64_t ldo);
// out (ceil(cols/2), rows): out[p][r] = (x[r][2p], x[r][2p+1]). B = x^T for x (n, k).
void PackPairsAlongRowsTransposed(const float* x, int64_t ld, int64_t rows, int64_t cols,
                                  uint32_t* out, int64_t ldo);
// out (ceil(rows/2), cols): out[p][c] = (x[2p][c], x[2p+1][c]). B = x, k along rows.
void PackPairsDownColumns(const float* x, int64_t ld, int64_t rows, int64_t cols, uint32_t* out,
                          int64_t ldo);
// out (cols, ceil(rows/2)): out[c][p] = (x[2p][c], x[2p+1][c]). A = x^T for x (k, m).
void PackPairsDownColumnsTransposed(const float* x, int64_t ld, int64_t rows, int64_t cols,
                                    uint32_t* out, int64_t ldo);

}  // namespace openmoe
