// GemmRows: a (rows, cols) row-major matrix of values that only feed GEMMs (an FFN's gated hidden,
// its gate gradients), held as the precision's GEMMs read them: floats for kFp32, bf16 for kBf16.
// A bf16 GEMM rounds its float operands to bf16 anyway (core/gemm.h), so storing the rounded
// values changes no result, halves the bytes and spares the GEMM its rounded copy.
//
// Views into memory owned elsewhere (a ScratchArena); copyable; not thread-safe beyond what the
// caller arranges (distinct rows may be set from distinct threads).
#pragma once

#include <cstdint>

#include "core/gemm.h"
#include "core/scratch_arena.h"

namespace openmoe {

struct GemmRows {
  float* f32 = nullptr;      // kFp32
  uint16_t* bf16 = nullptr;  // kBf16
  int64_t rows = 0, cols = 0;

  GemmInput input() const { return f32 != nullptr ? GemmInput(f32, cols) : GemmInput(bf16, cols); }
  // Row i as floats (kFp32), to be written in place; null for kBf16, whose rows are written from
  // floats kept elsewhere with SetRow.
  float* FloatRow(int64_t i) const { return f32 != nullptr ? f32 + i * cols : nullptr; }
  // Stores row i from `values` (cols floats): copied (kFp32; nothing to do when values is
  // FloatRow(i)) or rounded to bf16 (kBf16).
  void SetRow(int64_t i, const float* values) const;
  // Stores every row from `values` (a dense rows x cols matrix of floats; rows as taken), then
  // returns input().
  GemmInput FilledFrom(const float* values) const;
};

// Floats of scratch a (rows, cols) GemmRows of this precision takes.
int64_t GemmRowsFloats(GemmPrecision precision, int64_t rows, int64_t cols);

// A (rows, cols) GemmRows taken from `scratch` (valid for the ScratchScope it is taken in).
GemmRows TakeGemmRows(ScratchArena* scratch, GemmPrecision precision, int64_t rows, int64_t cols);

}  // namespace openmoe
