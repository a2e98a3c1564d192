// Gated feed-forward block, used for dense FFNs and for every expert.
//
// FFN_OPENMOE (OpenMoE's code): g = x @ wi_0 (T, 2F) split into halves a = g[:, :F], b = g[:, F:];
//   h = a * silu(b) * (x @ wi_1); y = h @ wo.
// FFN_SWIGLU: h = silu(x @ wi_0) * (x @ wi_1), wi_0 (d, F); y = h @ wo.
#pragma once

#include <cstdint>

#include "core/gemm.h"
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

struct FfnCache {
  Tensor g0;  // (T, Wi0Width) x @ wi_0
  Tensor g1;  // (T, F) x @ wi_1
  Tensor h;   // (T, F) the gated hidden, input of wo
  Tensor dh;  // backward scratch (T, F)
  Tensor dg0; // backward scratch (T, Wi0Width)
};

// x: (T, d); y: (T, d), overwritten (or, with accumulate, added to).
void FfnForward(const FfnDims& dims, const FfnWeights& w, const float* x, FfnCache* cache,
                float* y, bool accumulate = false);

// dy: (T, d). dx (T, d) += ..., grads += ... . The cache must hold this x's forward.
void FfnBackward(const FfnDims& dims, const FfnWeights& w, const float* x, FfnCache* cache,
                 const float* dy, const FfnGrads& grads, float* dx);

}  // namespace openmoe
