// The MoE layer on one process: route, dispatch (gather), experts, combine (scatter), and the
// backward of all four in reverse.
//
// y[t] = sum over kept choices (t, e) of probs[t, e] * Expert_e(x[t]). A token with every choice
// dropped gets 0 here (it passes on through the residual). Experts are gated FFNs
// (model/ffn.h) with stacked weights; expert e's buffer is its kept assignments in dispatch order
// (Routing::expert_offsets), so no slot padding is computed.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/ffn.h"
#include "model/router.h"

namespace openmoe {

struct MoeDims {
  int64_t tokens = 0;
  int64_t d_model = 0;
  int64_t expert_d_ff = 0;
  FfnForm form = FFN_OPENMOE;
  int64_t num_experts = 0;
};

struct MoeWeights {
  const float* router = nullptr;  // (d, E)
  const float* wi_0 = nullptr;    // (E, d, Wi0Width)
  const float* wi_1 = nullptr;    // (E, d, F)
  const float* wo = nullptr;      // (E, F, d)
};

struct MoeGrads {  // accumulated into
  float* router = nullptr;
  float* wi_0 = nullptr;
  float* wi_1 = nullptr;
  float* wo = nullptr;
};

struct MoeCache {
  Routing routing;
  Tensor dispatched;                 // (A, d) expert inputs in dispatch order
  Tensor expert_out;                 // (A, d) expert outputs in dispatch order
  std::vector<FfnCache> expert_ffn;  // (E)
  Tensor workspace;                  // backward scratch
};

// x: (T, d); y: (T, d), overwritten. Returns the router loss sums of this call.
RouterLossSums MoeForward(const MoeDims& dims, const RoutingConfig& routing_config,
                          const MoeWeights& w, const float* x, MoeCache* cache, float* y);

// dy: (T, d). load_balance_scale and z_scale: see RouterLossBackward. dx (T, d) += ...,
// grads += ... . The gradient reaches the router through the kept gates and the router losses.
void MoeBackward(const MoeDims& dims, const MoeWeights& w, const float* x, MoeCache* cache,
                 const float* dy, double load_balance_scale, double z_scale, const MoeGrads& grads,
                 float* dx);

}  // namespace openmoe
