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

#include "core/communicator.h"
#include "core/scratch_arena.h"
#include "core/tensor.h"
#include "model/expert_ffn.h"
#include "model/ffn.h"
#include "model/router.h"

namespace openmoe {

struct MoeCache {
  Routing routing;
  // Router jitter: (T, d) noise the router input is multiplied by, filled by the caller before
  // MoeForward; empty means none (the router sees x itself, else x * jitter, made in scratch
  // when needed).
  Tensor jitter;
  // The tokens' ids and segment ids (T), set by the caller before MoeForward when the routing
  // config needs them (token-id tables, ignore_padding_tokens); not owned, read by MoeForward.
  const int32_t* token_ids = nullptr;
  const int32_t* segment_ids = nullptr;
  int64_t seq_len = 0;  // tokens per row of the batch, set with them (per-sequence balancing)
  // (A, d) expert inputs in dispatch order. They only feed the experts' GEMMs, so BF16 keeps
  // them as bf16 (dispatched16: half the bytes, the values those GEMMs round them to) and FP32 as
  // floats (dispatched); MoeForward fills the one its precision uses and empties the other.
  Tensor dispatched;
  std::vector<uint16_t> dispatched16;
  Tensor expert_out;                 // (A, d) expert outputs in dispatch order
  // The experts' activations, one per block the runner ran (model/expert_ffn.h): filled by its
  // Forward, read by its Backward.
  std::vector<FfnCache> expert_ffn;
  // Where the layer's temporaries go (the runner's too), set by the caller (the Decoder shares
  // one arena among all sub-blocks); null: own_scratch.
  ScratchArena* scratch = nullptr;
  ScratchArena own_scratch;
  ScratchArena* Scratch() { return scratch != nullptr ? scratch : &own_scratch; }
  // The dispatched rows as GEMMs read them (d columns), and row a of them as floats (exact).
  GemmInput DispatchedRows(int64_t d) const;
  void DispatchedRow(int64_t a, int64_t d, float* out) const;
};

// Where the experts run. MoeForward gathers the kept tokens into cache->dispatched (dispatched16
// in BF16; runners read them through DispatchedRows / DispatchedRow), grouped by global expert
// as cache->routing.expert_offsets says; a runner fills cache->expert_out in the same order, and
// its Backward (after that layer's Forward, on the same cache) turns d expert_out into
// d dispatched. `layer` keys whatever the runner keeps between a layer's Forward and its
// Backward (the caller gives each MoE layer of a model its own key, e.g. its layer index); the
// experts' activations live in cache->expert_ffn. Both runners run their experts through
// ExpertBlocksForward / ExpertBlocksBackward (model/expert_ffn.h). On an expert-parallel mesh the
// runner's calls are collective over the ranks (parallel/expert_parallel.h).
class ExpertRunner {
 public:
  virtual ~ExpertRunner() = default;
  virtual void Forward(int64_t layer, const MoeDims& dims, const MoeWeights& w,
                       MoeCache* cache) = 0;
  // d_expert_out (A, d) in; d_dispatched (A, d) += ...; expert weight grads += ... .
  virtual void Backward(int64_t layer, const MoeDims& dims, const MoeWeights& w,
                        const MoeGrads& grads, MoeCache* cache, const float* d_expert_out,
                        float* d_dispatched) = 0;
};

// Every expert in this process: expert e runs on its own block of dispatched rows
// (routing.expert_offsets). Keeps no state of its own, so `layer` is unused.
class LocalExpertRunner final : public ExpertRunner {
 public:
  void Forward(int64_t layer, const MoeDims& dims, const MoeWeights& w, MoeCache* cache) override;
  void Backward(int64_t layer, const MoeDims& dims, const MoeWeights& w, const MoeGrads& grads,
                MoeCache* cache, const float* d_expert_out, float* d_dispatched) override;
};

// Expert e's block of dispatched rows, for every expert e (empty blocks included).
std::vector<ExpertBlock> DispatchBlocks(const Routing& routing);

// x: (T, d); y: (T, d), overwritten. Returns the router loss sums of this call. runner: where the
// experts run (null: LocalExpertRunner); layer: this layer's key for the runner (see
// ExpertRunner). With cache->jitter set, the router sees x * jitter and the experts x. With
// routing_config.token_id_tables set, tokens go where the tables say for `layer` (by
// cache->token_ids): the router is not run, has no losses and gets no gradient.
//
// model_comm (tensor parallelism, may be null): the ranks of a model group, each holding a slice
// of every expert's mlp dim (dims.expert_d_ff is the slice's) and the same x and router. The
// routing is then the same on every rank; the experts' partial outputs (A, d) are summed over the
// group before the combine, so y and the gates' gradients are the whole layer's on every rank.
RouterLossSums MoeForward(const MoeDims& dims, const RoutingConfig& routing_config,
                          const MoeWeights& w, const float* x, MoeCache* cache, float* y,
                          ExpertRunner* runner = nullptr, int64_t layer = 0,
                          Communicator* model_comm = nullptr);

// dy: (T, d). load_balance_scale and z_scale: see RouterLossBackward. dx (T, d) += ...,
// grads += ... . The gradient reaches the router through the kept gates and the router losses.
// model_comm: as in MoeForward (the same one); d dispatched (A, d) is summed over it before it
// reaches dx, so dx and the router's gradient are the whole layer's on every rank of the group.
void MoeBackward(const MoeDims& dims, const MoeWeights& w, const float* x, MoeCache* cache,
                 const float* dy, double load_balance_scale, double z_scale, const MoeGrads& grads,
                 float* dx, ExpertRunner* runner = nullptr, int64_t layer = 0,
                 Communicator* model_comm = nullptr);

}  // namespace openmoe
