#include "core/bf16_pair_gemm.h"

#include <algorithm>

#include "core/bf16.h"

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace openmoe {
namespace {

inline uint32_t Pair(float even, float odd) {
  return static_cast<uint32_t>(FloatToBf16(even)) |
         static_cast<uint32_t>(FloatToBf16(odd)) << 16;
}

#if defined(__AVX512BF16__)

// Register block: MR rows x NV vectors of 16 columns, all accumulators in zmm registers (at most
// 4 x 4 + 4 B vectors + 1 broadcast of 32). Columns past n are masked on load and store. The loops
// over r and v are unrolled by hand-written pragmas so that g++ keeps acc in registers (without
// them it spilled all 16 accumulators to the stack on every step, at a third of the speed).
template <int MR, int NV>
void Block(int64_t n_left, int64_t kp, const uint32_t* a, int64_t lda, const uint32_t* b,
           int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  __mmask16 mask[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const int64_t left = n_left - 16 * v;
    mask[v] = left >= 16 ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>((1u << std::max<int64_t>(left, 0)) - 1u);
  }
  __m512 acc[MR][NV];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[r][v] = accumulate ? _mm512_maskz_loadu_ps(mask[v], c + r * ldc + 16 * v)
                             : _mm512_setzero_ps();
  for (int64_t p = 0; p < kp; ++p) {
    __m512i bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_maskz_loadu_epi32(mask[v], b + p * ldb + 16 * v);
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const __m512i av = _mm512_set1_epi32(static_cast<int>(a[r * lda + p]));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)av, (__m512bh)bv[v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(c + r * ldc + 16 * v, mask[v], acc[r][v]);
}

template <int MR>
void Rows(int64_t n, int64_t kp, const uint32_t* a, int64_t lda, const uint32_t* b, int64_t ldb,
          float* c, int64_t ldc, bool accumulate) {
  for (int64_t j0 = 0; j0 < n; j0 += 64) {
    const int64_t left = n - j0;
    const uint32_t* bj = b + j0;
    float* cj = c + j0;
    switch (std::min<int64_t>((left + 15) / 16, 4)) {
      case 1: Block<MR, 1>(left, kp, a, lda, bj, ldb, cj, ldc, accumulate); break;
      case 2: Block<MR, 2>(left, kp, a, lda, bj, ldb, cj, ldc, accumulate); break;
      case 3: Block<MR, 3>(left, kp, a, lda, bj, ldb, cj, ldc, accumulate); break;
      default: Block<MR, 4>(left, kp, a, lda, bj, ldb, cj, ldc, accumulate); break;
    }
  }
}

void NativeGemm(int64_t m, int64_t n, int64_t kp, const uint32_t* a, int64_t lda,
                const uint32_t* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) Rows<4>(n, kp, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate);
  switch (m - i) {
    case 3: Rows<3>(n, kp, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate); break;
    case 2: Rows<2>(n, kp, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate); break;
    case 1: Rows<1>(n, kp, a + i * lda, lda, b, ldb, c + i * ldc, ldc, accumulate); break;
    default: break;
  }
}

#endif  // __AVX512BF16__

inline float Low(uint32_t pair) { return Bf16ToFloat(static_cast<uint16_t>(pair & 0xFFFFu)); }
inline float High(uint32_t pair) { return Bf16ToFloat(static_cast<uint16_t>(pair >> 16)); }

// The same products in fp32, row by row: c_row += a_even * b_even_row + a_odd * b_odd_row, a
// loop over columns that the compiler vectorises.
void PortableGemm(int64_t m, int64_t n, int64_t kp, const uint32_t* a, int64_t lda,
                  const uint32_t* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < m; ++i) {
    float* crow = c + i * ldc;
    if (!accumulate) std::fill(crow, crow + n, 0.0f);
    for (int64_t p = 0; p < kp; ++p) {
      const float a0 = Low(a[i * lda + p]), a1 = High(a[i * lda + p]);
      const uint32_t* brow = b + p * ldb;
      for (int64_t j = 0; j < n; ++j) crow[j] += a0 * Low(brow[j]) + a1 * High(brow[j]);
    }
  }
}

}  // namespace

bool Bf16PairGemmIsNative() {
#if defined(__AVX512BF16__)
  return CpuHasAvx512Bf16();
#else
  return false;
#endif
}

void Bf16PairGemm(int64_t m, int64_t n, int64_t kp, const uint32_t* a, int64_t lda,
                  const uint32_t* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
#if defined(__AVX512BF16__)
  if (CpuHasAvx512Bf16()) return NativeGemm(m, n, kp, a, lda, b, ldb, c, ldc, accumulate);
#endif
  PortableGemm(m, n, kp, a, lda, b, ldb, c, ldc, accumulate);
}

void PackPairsAlongRows(const float* x, int64_t ld, int64_t rows, int64_t cols, uint32_t* out,
                        int64_t ldo) {
  const int64_t full = cols / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld;
    uint32_t* o = out + r * ldo;
    for (int64_t p = 0; p < full; ++p) o[p] = Pair(xr[2 * p], xr[2 * p + 1]);
    if (cols % 2 != 0) o[full] = Pair(xr[cols - 1], 0.0f);
  }
}

void PackPairsAlongRowsTransposed(const float* x, int64_t ld, int64_t rows, int64_t cols,
                                  uint32_t* out, int64_t ldo) {
  const int64_t full = cols / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld;
    for (int64_t p = 0; p < full; ++p) out[p * ldo + r] = Pair(xr[2 * p], xr[2 * p + 1]);
    if (cols % 2 != 0) out[full * ldo + r] = Pair(xr[cols - 1], 0.0f);
  }
}

void PackPairsDownColumns(const float* x, int64_t ld, int64_t rows, int64_t cols, uint32_t* out,
                          int64_t ldo) {
  for (int64_t p = 0; 2 * p < rows; ++p) {
    const float* even = x + 2 * p * ld;
    const float* odd = 2 * p + 1 < rows ? even + ld : nullptr;
    uint32_t* o = out + p * ldo;
    if (odd != nullptr) {
      for (int64_t c = 0; c < cols; ++c) o[c] = Pair(even[c], odd[c]);
    } else {
      for (int64_t c = 0; c < cols; ++c) o[c] = Pair(even[c], 0.0f);
    }
  }
}

void PackPairsDownColumnsTransposed(const float* x, int64_t ld, int64_t rows, int64_t cols,
                                    uint32_t* out, int64_t ldo) {
  for (int64_t p = 0; 2 * p < rows; ++p) {
    const float* even = x + 2 * p * ld;
    const float* odd = 2 * p + 1 < rows ? even + ld : nullptr;
    for (int64_t c = 0; c < cols; ++c) out[c * ldo + p] = Pair(even[c], odd ? odd[c] : 0.0f);
  }
}

}  // namespace openmoe
