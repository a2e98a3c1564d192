#include "core/bf16.h"

#include <cstring>

namespace openmoe {

// Plain loops over the inline scalar conversions: no branches, so g++ vectorises them (AVX2 or
// AVX-512 integer ops) with results bit-identical to the scalar path.
void FloatToBf16(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = FloatToBf16(x[i]);
}

void Bf16ToFloat(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = Bf16ToFloat(x[i]);
}

void RoundToBf16(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = RoundToBf16(x[i]);
}

uint16_t* NarrowToBf16InPlace(float* x, int64_t n) {
  // Block b's bf16 values land on bytes that precede the floats of block b + 1 and later, so
  // front to back, one block copied out before it is written, every float is read before it is
  // overwritten. memcpy keeps the byte moves free of type-punning.
  constexpr int64_t kBlock = 64;
  char* bytes = reinterpret_cast<char*>(x);
  float in[kBlock];
  uint16_t out[kBlock];
  for (int64_t i = 0; i < n; i += kBlock) {
    const int64_t m = n - i < kBlock ? n - i : kBlock;
    std::memcpy(in, bytes + i * sizeof(float), m * sizeof(float));
    FloatToBf16(in, out, m);
    std::memcpy(bytes + i * sizeof(uint16_t), out, m * sizeof(uint16_t));
  }
  return reinterpret_cast<uint16_t*>(x);
}

bool CpuHasAvx512Bf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has;
}

}  // namespace openmoe
