#include "core/bf16_pair_gemm.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "core/bf16.h"
#include "core/check.h"

#if defined(__AVX512BF16__) || (defined(__AMX_TILE__) && defined(__AMX_BF16__))
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


#if defined(__AMX_TILE__) && defined(__AMX_BF16__)

// AMX: eight tile registers of 16 rows x 64 bytes. A 32 x 32 block of C is four accumulator tiles
// (tmm0-3) fed by two A tiles (tmm4-5: 16 rows x 16 pairs) and two B tiles (tmm6-7: 16 pair-rows x
// 16 columns) per step of 16 pairs (32 of k). Partial tiles (edges of m, n or kp) go through
// zero-padded copies; full ones are loaded in place.
struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

constexpr int kT = 16;  // tile rows, and 32-bit words per tile row

// Where a tile load reads a (rows x words) block of 4-byte elements at src (leading dimension
// ld): src itself when the block fills the 16 x 16 tile, else `pad`, a zero-padded copy of it.
// *stride gets the row stride in bytes.
const void* TileSource(const void* src, int64_t ld, int64_t rows, int64_t words, uint32_t* pad,
                       int* stride) {
  if (rows == kT && words == kT) {
    *stride = static_cast<int>(ld * 4);
    return src;
  }
  std::memset(pad, 0, sizeof(uint32_t) * kT * kT);
  const auto* from = static_cast<const uint32_t*>(src);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(pad + r * kT, from + r * ld, sizeof(uint32_t) * words);
  *stride = kT * 4;
  return pad;
}

// Where a C tile is stored: c itself when full, else `pad`, whose valid part CopyOut then writes.
float* TileTarget(float* c, int64_t ldc, int64_t rows, int64_t cols, float* pad, int* stride) {
  const bool full = rows == kT && cols == kT;
  *stride = full ? static_cast<int>(ldc * 4) : kT * 4;
  return full ? c : pad;
}
void CopyOut(const float* target, float* c, int64_t ldc, int64_t rows, int64_t cols) {
  if (target == c) return;
  for (int64_t r = 0; r < rows; ++r) std::memcpy(c + r * ldc, target + r * kT, sizeof(float) * cols);
}

// The tile intrinsics take the tile number as a literal, so loads and stores are macros; each
// finds its source or target first (the intrinsic's operands have no evaluation order).
#define OPENMOE_TILE_LOAD(t, ...)                                \
  do {                                                           \
    int stride_ = 0;                                             \
    const void* src_ = TileSource(__VA_ARGS__, &stride_);        \
    _tile_loadd(t, src_, stride_);                               \
  } while (0)
#define OPENMOE_TILE_STORE(t, c, ldc, rows, cols, pad)           \
  do {                                                           \
    int stride_ = 0;                                             \
    float* target_ = TileTarget(c, ldc, rows, cols, pad, &stride_); \
    _tile_stored(t, target_, stride_);                           \
    CopyOut(target_, c, ldc, rows, cols);                        \
  } while (0)

void AmxGemm(int64_t m, int64_t n, int64_t kp, const uint32_t* a, int64_t lda, const uint32_t* b,
             int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = kT;
    config.colsb[t] = kT * 4;
  }
  _tile_loadconfig(&config);
  alignas(64) uint32_t pad_a[2][kT * kT], pad_b[2][kT * kT], pad_c_in[kT * kT];
  alignas(64) float pad_c[kT * kT];
  auto clip = [](int64_t left) { return std::min<int64_t>(std::max<int64_t>(left, 0), kT); };
  for (int64_t i0 = 0; i0 < m; i0 += 2 * kT) {
    const int64_t r0 = clip(m - i0), r1 = clip(m - i0 - kT);
    for (int64_t j0 = 0; j0 < n; j0 += 2 * kT) {
      const int64_t c0 = clip(n - j0), c1 = clip(n - j0 - kT);
      float* c00 = c + i0 * ldc + j0;
      float* c01 = c00 + kT;
      float* c10 = c00 + kT * ldc;
      float* c11 = c10 + kT;
      if (accumulate) {
        OPENMOE_TILE_LOAD(0, c00, ldc, r0, c0, pad_c_in);
        if (c1 > 0) OPENMOE_TILE_LOAD(1, c01, ldc, r0, c1, pad_c_in);
        if (r1 > 0) OPENMOE_TILE_LOAD(2, c10, ldc, r1, c0, pad_c_in);
        if (r1 > 0 && c1 > 0) OPENMOE_TILE_LOAD(3, c11, ldc, r1, c1, pad_c_in);
      } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      }
      for (int64_t p0 = 0; p0 < kp; p0 += kT) {
        const int64_t words = clip(kp - p0);
        const uint32_t* a0 = a + i0 * lda + p0;
        const uint32_t* b0 = b + p0 * ldb + j0;
        OPENMOE_TILE_LOAD(4, a0, lda, r0, words, pad_a[0]);
        if (r1 > 0) OPENMOE_TILE_LOAD(5, a0 + kT * lda, lda, r1, words, pad_a[1]);
        OPENMOE_TILE_LOAD(6, b0, ldb, words, c0, pad_b[0]);
        if (c1 > 0) OPENMOE_TILE_LOAD(7, b0 + kT, ldb, words, c1, pad_b[1]);
        _tile_dpbf16ps(0, 4, 6);
        if (c1 > 0) _tile_dpbf16ps(1, 4, 7);
        if (r1 > 0) _tile_dpbf16ps(2, 5, 6);
        if (r1 > 0 && c1 > 0) _tile_dpbf16ps(3, 5, 7);
      }
      OPENMOE_TILE_STORE(0, c00, ldc, r0, c0, pad_c);
      if (c1 > 0) OPENMOE_TILE_STORE(1, c01, ldc, r0, c1, pad_c);
      if (r1 > 0) OPENMOE_TILE_STORE(2, c10, ldc, r1, c0, pad_c);
      if (r1 > 0 && c1 > 0) OPENMOE_TILE_STORE(3, c11, ldc, r1, c1, pad_c);
    }
  }
  _tile_release();
}

#undef OPENMOE_TILE_LOAD
#undef OPENMOE_TILE_STORE

#endif  // AMX

// CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE. Linux (5.16+) gives a process the tile
// state only after it asks (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA, feature 18).
bool AmxAvailable() {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
  static const bool ok = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    if ((edx & (1u << 22)) == 0 || (edx & (1u << 24)) == 0) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

std::atomic<int> kernel_override{-1};  // -1: the fastest available

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

bool Bf16PairKernelAvailable(Bf16PairKernel kernel) {
  switch (kernel) {
    case Bf16PairKernel::kAmx:
      return AmxAvailable();
    case Bf16PairKernel::kAvx512Bf16:
#if defined(__AVX512BF16__)
      return CpuHasAvx512Bf16();
#else
      return false;
#endif
    case Bf16PairKernel::kPortable:
      return true;
  }
  return false;
}

Bf16PairKernel ActiveBf16PairKernel() {
  const int chosen = kernel_override.load(std::memory_order_relaxed);
  if (chosen >= 0) return static_cast<Bf16PairKernel>(chosen);
  static const Bf16PairKernel fastest =
      Bf16PairKernelAvailable(Bf16PairKernel::kAmx)          ? Bf16PairKernel::kAmx
      : Bf16PairKernelAvailable(Bf16PairKernel::kAvx512Bf16) ? Bf16PairKernel::kAvx512Bf16
                                                             : Bf16PairKernel::kPortable;
  return fastest;
}

void SetBf16PairKernel(Bf16PairKernel kernel) {
  OPENMOE_CHECK_MSG(Bf16PairKernelAvailable(kernel), "bf16 pair kernel %s is not available here",
                    Bf16PairKernelName(kernel));
  kernel_override.store(static_cast<int>(kernel));
}

const char* Bf16PairKernelName(Bf16PairKernel kernel) {
  switch (kernel) {
    case Bf16PairKernel::kAmx:
      return "AMX";
    case Bf16PairKernel::kAvx512Bf16:
      return "VDPBF16PS";
    case Bf16PairKernel::kPortable:
      return "portable fp32 loop";
  }
  return "unknown";
}

void Bf16PairGemm(int64_t m, int64_t n, int64_t kp, const uint32_t* a, int64_t lda,
                  const uint32_t* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  switch (ActiveBf16PairKernel()) {
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
    case Bf16PairKernel::kAmx:
      return AmxGemm(m, n, kp, a, lda, b, ldb, c, ldc, accumulate);
#endif
#if defined(__AVX512BF16__)
    case Bf16PairKernel::kAvx512Bf16:
      return NativeGemm(m, n, kp, a, lda, b, ldb, c, ldc, accumulate);
#endif
    default:
      return PortableGemm(m, n, kp, a, lda, b, ldb, c, ldc, accumulate);
  }
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
