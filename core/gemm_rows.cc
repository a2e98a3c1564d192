#include "core/gemm_rows.h"

#include <algorithm>

#include "core/bf16.h"

namespace openmoe {

void GemmRows::SetRow(int64_t i, const float* values) const {
  if (bf16 != nullptr) {
    FloatToBf16(values, bf16 + i * cols, cols);
  } else if (values != f32 + i * cols) {
    std::copy_n(values, cols, f32 + i * cols);
  }
}

GemmInput GemmRows::FilledFrom(const float* values) const {
  if (bf16 != nullptr) {
    FloatToBf16(values, bf16, rows * cols);
  } else {
    std::copy_n(values, rows * cols, f32);
  }
  return input();
}

int64_t GemmRowsFloats(GemmPrecision precision, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  return precision == GemmPrecision::kBf16 ? (n + 1) / 2 : n;  // two bf16 per float
}

GemmRows TakeGemmRows(ScratchArena* scratch, GemmPrecision precision, int64_t rows, int64_t cols) {
  float* p = scratch->Take(GemmRowsFloats(precision, rows, cols));
  GemmRows out;
  out.rows = rows;
  out.cols = cols;
  if (precision == GemmPrecision::kBf16) {
    out.bf16 = reinterpret_cast<uint16_t*>(p);
  } else {
    out.f32 = p;
  }
  return out;
}

}  // namespace openmoe
