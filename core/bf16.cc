#include "core/bf16.h"

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

bool CpuHasAvx512Bf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has;
}

}  // namespace openmoe
