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

// Expert weights hold the experts this process owns (all E on one process, E_local on a rank of
// an expert-parallel mesh), stacked along the leading dim.
struct MoeWeights {
  const float* router = nullptr;  // (d, E)
  const float* wi_0 = nullptr;    // (E_local, d, Wi0Width)
  const float* wi_1 = nullptr;    // (E_local, d, F)
  const float* wo = nullptr;      // (E_local, F, d)
};

struct MoeGrads {  // accumulated into
  float* router = nullptr;
  float* wi_0 = nullptr;
  float* wi_1 = nullptr;
  float* wo = nullptr;
};

// What an expert-parallel exchange keeps between forward and backward (unused on one process).
struct ExpertExchangeState {
  // A run of received rows from one source rank for one local expert.
  struct Block {
    int64_t begin = 0;         // first row in receive order
    int64_t rows = 0;
    int64_t local_expert = 0;  // index into the stacked local expert weights
  };
  std::vector<int64_t> send_rows;  // (ranks) rows sent to each rank, in dispatch order
  std::vector<int64_t> recv_rows;  // (ranks) rows received from each rank
  std::vector<Block> blocks;       // receive order: source-major, then expert
  Tensor recv;        // (R, d) received rows: the local experts' inputs
  Tensor expert_res;  // (R, d) the local experts' outputs (backward: their output gradients)
  Tensor grad_in;     // (R, d) backward: the local experts' input gradients
  Tensor returned;    // (A, d) backward: input gradients back in dispatch order
};

struct MoeCache {
  Routing routing;
  // Router jitter: (T, d) noise the router input is multiplied by, filled by the caller before
  // MoeForward; empty means none (the router sees x itself). router_input (T, d) = x * jitter,
  // and backward scratch after that.
  Tensor jitter;
  Tensor router_input;
  Tensor dispatched;                 // (A, d) expert inputs in dispatch order
  Tensor expert_out;                 // (A, d) expert outputs in dispatch order
  std::vector<FfnCache> expert_ffn;  // per local expert (per received block on a mesh)
  ExpertExchangeState exchange;
  Tensor workspace;                  // backward scratch
};

// Where the experts run. MoeForward gathers the kept tokens into cache->dispatched, grouped by
// global expert as cache->routing.expert_offsets says; a runner fills cache->expert_out in the
// same order, and its backward turns d expert_out into d dispatched. On an expert-parallel mesh
// the runner's calls are collective over the ranks (parallel/expert_parallel.h).
class ExpertRunner {
 public:
  virtual ~ExpertRunner() = default;
  virtual void Forward(const MoeDims& dims, const MoeWeights& w, MoeCache* cache) = 0;
  // d_expert_out (A, d) in; d_dispatched (A, d) += ...; expert weight grads += ... .
  virtual void Backward(const MoeDims& dims, const MoeWeights& w, const MoeGrads& grads,
                        MoeCache* cache, const float* d_expert_out, float* d_dispatched) = 0;
};

// Every expert in this process: expert e runs on its own block of dispatched rows.
class LocalExpertRunner final : public ExpertRunner {
 public:
  void Forward(const MoeDims& dims, const MoeWeights& w, MoeCache* cache) override;
  void Backward(const MoeDims& dims, const MoeWeights& w, const MoeGrads& grads, MoeCache* cache,
                const float* d_expert_out, float* d_dispatched) override;
};

// Expert e's FFN shape and its slices of stacked weights / gradients (local index e).
FfnDims ExpertFfnDims(const MoeDims& dims, int64_t tokens);
FfnWeights ExpertFfnWeights(const MoeDims& dims, const MoeWeights& w, int64_t local_expert);
FfnGrads ExpertFfnGrads(const MoeDims& dims, const MoeGrads& g, int64_t local_expert);

// x: (T, d); y: (T, d), overwritten. Returns the router loss sums of this call. runner: where the
// experts run (null: LocalExpertRunner). With cache->jitter set, the router sees x * jitter and
// the experts x.
RouterLossSums MoeForward(const MoeDims& dims, const RoutingConfig& routing_config,
                          const MoeWeights& w, const float* x, MoeCache* cache, float* y,
                          ExpertRunner* runner = nullptr);

// dy: (T, d). load_balance_scale and z_scale: see RouterLossBackward. dx (T, d) += ...,
// grads += ... . The gradient reaches the router through the kept gates and the router losses.
void MoeBackward(const MoeDims& dims, const MoeWeights& w, const float* x, MoeCache* cache,
                 const float* dy, double load_balance_scale, double z_scale, const MoeGrads& grads,
                 float* dx, ExpertRunner* runner = nullptr);

}  // namespace openmoe
