// Gated feed-forward block, used for dense FFNs and for every expert.
//
// FFN_OPENMOE (OpenMoE's code): g = x @ wi_0 (T, 2F) split into halves a = g[:, :F], b = g[:, F:];
//   h = a * silu(b) * (x @ wi_1); y = h @ wo.
// FFN_SWIGLU: h = silu(x @ wi_0) * (x @ wi_1), wi_0 (d, F); y = h @ wo.
#pragma once

#include <cstdint>

#include "core/gemm.h"
#include "core/scratch_arena.h"
#include "core/tensor.h"
#include "proto/job.pb.h"

namespace openmoe {

struct FfnDims {
  int64_t tokens = 0;
  int64_t d_model = 0;
  int64_t d_ff = 0;
  FfnForm form = FFN_OPENMOE;
  // Every GEMM here, forward and backward (the gate's elementwise math stays fp32).
  GemmPrecision precision = GemmPrecision::kFp32;
  // Columns of wi_0: 2 * d_ff for FFN_OPENMOE, d_ff for FFN_SWIGLU.
  int64_t Wi0Width() const { return form == FFN_OPENMOE ? 2 * d_ff : d_ff; }
};

struct FfnWeights {
  const float* wi_0 = nullptr;  // (d, Wi0Width)
  const float* wi_1 = nullptr;  // (d, F)
  const float* wo = nullptr;    // (F, d)
};

struct FfnGrads {  // accumulated into
  float* wi_0 = nullptr;
  float* wi_1 = nullptr;
  float* wo = nullptr;
};

// What the backward needs and cannot get cheaply: the two up-projections. The gated hidden h (the
// input of wo) is one elementwise pass over them, so the backward recomputes it, bit for bit.
struct FfnCache {
  Tensor g0;  // (T, Wi0Width) x @ wi_0
  Tensor g1;  // (T, F) x @ wi_1
};

// Floats of scratch FfnForward / FfnBackward take. The temporaries that only feed GEMMs (h, and
// in the backward d g0 and d g1) are bf16 in BF16 (core/gemm_rows.h); d h, which the gate's
// backward reads, is fp32. FP32: forward h T F; backward h, d h (then d g1 in place) and d g0,
// T (2F + Wi0Width). BF16: forward T F / 2; backward h (then d g1 in place) T F / 2, d h T F,
// d g0 T Wi0Width / 2.
int64_t FfnScratchFloats(const FfnDims& dims, bool backward);

// x: (T, d); y: (T, d), overwritten (or, with accumulate, added to). scratch: where h lives
// (FfnScratchFloats, released on return); null: a temporary arena.
// x only feeds GEMMs: floats, or bf16 rows in BF16 (core/gemm.h GemmInput, leading dimension d).
void FfnForward(const FfnDims& dims, const FfnWeights& w, GemmInput x, FfnCache* cache, float* y,
                bool accumulate = false, ScratchArena* scratch = nullptr);
inline void FfnForward(const FfnDims& dims, const FfnWeights& w, const float* x, FfnCache* cache,
                       float* y, bool accumulate = false, ScratchArena* scratch = nullptr) {
  FfnForward(dims, w, GemmInput(x, dims.d_model), cache, y, accumulate, scratch);
}

// dy: (T, d). dx (T, d) += ..., grads += ... . The cache must hold this x's forward. scratch: h,
// d h and d g0 (FfnScratchFloats, released on return); null: a temporary arena.
void FfnBackward(const FfnDims& dims, const FfnWeights& w, GemmInput x, const FfnCache* cache,
                 const float* dy, const FfnGrads& grads, float* dx,
                 ScratchArena* scratch = nullptr);
inline void FfnBackward(const FfnDims& dims, const FfnWeights& w, const float* x,
                        const FfnCache* cache, const float* dy, const FfnGrads& grads, float* dx,
                        ScratchArena* scratch = nullptr) {
  FfnBackward(dims, w, GemmInput(x, dims.d_model), cache, dy, grads, dx, scratch);
}

}  // namespace openmoe
