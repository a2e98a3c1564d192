// bfloat16 numerics: the upper 16 bits of an IEEE float (1 sign, 8 exponent, 7 mantissa bits), as
// the TPU MXU consumes it. Storage is uint16_t; arithmetic stays in float.
//
// float -> bf16 rounds to nearest, ties to even (RNE) on the bit pattern, for every input:
//   - normal and subnormal floats alike (a subnormal float rounds to a subnormal bf16, to zero or
//     to the smallest normal, as RNE on the bits says; nothing is flushed);
//   - finite values at or above 0x1.FFp127 + half an ulp (0x1.FF8p127) round to +-inf, as RNE says;
//     the bf16 max, 0x1.FEp127 = 3.3895314e38, is kept; -0.0 stays -0.0;
//   - +-inf stay +-inf; a NaN stays a NaN of the same sign with the quiet bit set (its upper
//     payload bits kept), never turning into inf.
// bf16 -> float is exact (a shift).
// The array versions give bit-identical results to the scalar ones; they are plain integer loops
// that the compiler vectorises for the build's ISA (-march=native). AVX-512's VCVTNEPS2BF16 is not
// used: it flushes subnormal inputs and outputs to zero, which would break the contract above.
#pragma once

#include <bit>
#include <cstdint>

namespace openmoe {

inline uint16_t FloatToBf16(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  // NaN: truncate and force the quiet bit, so a payload living only in the low bits stays NaN.
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan = (bits >> 16) | 0x0040u;
  return static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

inline float Bf16ToFloat(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

// float -> bf16 -> float: the value a bf16 multiplier sees.
inline float RoundToBf16(float x) { return Bf16ToFloat(FloatToBf16(x)); }

// y[i] = FloatToBf16(x[i])  (n)
void FloatToBf16(const float* x, uint16_t* y, int64_t n);
// y[i] = Bf16ToFloat(x[i])  (n)
void Bf16ToFloat(const uint16_t* x, float* y, int64_t n);
// y[i] = RoundToBf16(x[i])  (n); y == x is allowed.
void RoundToBf16(const float* x, float* y, int64_t n);

// Rounds x (n floats) to bf16 in place: the n bf16 values packed densely into x's first 2n bytes,
// returned; x's floats are spent. For a buffer that only feeds bf16 GEMMs from now on.
uint16_t* NarrowToBf16InPlace(float* x, int64_t n);

// Whether this CPU executes AVX512-BF16 instructions (VDPBF16PS), checked once at run time. The
// bf16 GEMM (core/gemm.h) uses it to pick its backend.
bool CpuHasAvx512Bf16();

}  // namespace openmoe
