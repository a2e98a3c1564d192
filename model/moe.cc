#include "model/moe.h"

#include <algorithm>

#include "core/bf16.h"
#include "core/check.h"
#include "core/gemm.h"
#include "core/kernels.h"
#include "core/phase_timer.h"
#include "model/expert_bias.h"
#include "model/token_id_routing.h"

namespace openmoe {

std::vector<ExpertBlock> DispatchBlocks(const Routing& r) {
  const int64_t num_experts = static_cast<int64_t>(r.expert_offsets.size()) - 1;
  std::vector<ExpertBlock> blocks(num_experts);
  for (int64_t e = 0; e < num_experts; ++e) {
    blocks[e] = {.begin = r.expert_offsets[e],
                 .rows = r.expert_offsets[e + 1] - r.expert_offsets[e],
                 .local_expert = e};
  }
  return blocks;
}

GemmInput MoeCache::DispatchedRows(int64_t d) const {
  return dispatched16.empty() ? GemmInput(dispatched.data(), d) : GemmInput(dispatched16.data(), d);
}

void MoeCache::DispatchedRow(int64_t a, int64_t d, float* out) const {
  if (dispatched16.empty()) {
    std::copy_n(dispatched.data() + a * d, d, out);
  } else {
    Bf16ToFloat(dispatched16.data() + a * d, out, d);
  }
}

void LocalExpertRunner::Forward(int64_t /*layer*/, const MoeDims& dims, const MoeWeights& w,
                                MoeCache* cache) {
  ExpertBlocksForward(dims, w, DispatchBlocks(cache->routing), cache->DispatchedRows(dims.d_model),
                      &cache->expert_ffn, cache->expert_out.data(), cache->Scratch());
}

void LocalExpertRunner::Backward(int64_t /*layer*/, const MoeDims& dims, const MoeWeights& w,
                                 const MoeGrads& grads, MoeCache* cache,
                                 const float* d_expert_out, float* d_dispatched) {
  ExpertBlocksBackward(dims, w, grads, DispatchBlocks(cache->routing),
                       cache->DispatchedRows(dims.d_model), cache->expert_ffn, d_expert_out,
                       d_dispatched, cache->Scratch());
}

namespace {
LocalExpertRunner* DefaultRunner() {
  static LocalExpertRunner runner;
  return &runner;
}
}  // namespace

RouterLossSums MoeForward(const MoeDims& dims, const RoutingConfig& routing_config,
                          const MoeWeights& w, const float* x, MoeCache* cache, float* y,
                          ExpertRunner* runner, int64_t layer, Communicator* model_comm) {
  const int64_t num_tokens = dims.tokens, d = dims.d_model, num_experts = dims.num_experts;
  OPENMOE_CHECK(routing_config.num_experts == num_experts);
  Routing& r = cache->routing;
  ScratchScope scope(cache->Scratch());
  const float* router_x = x;
  if (routing_config.token_id_tables != nullptr) {
    RouteByTokenId(routing_config, *routing_config.token_id_tables, layer, cache->token_ids,
                   cache->segment_ids, num_tokens, &r);
  } else if (cache->jitter.size() > 0) {
    OPENMOE_CHECK(cache->jitter.size() == num_tokens * d);
    const float* noise = cache->jitter.data();
    float* jittered = cache->Scratch()->Take(num_tokens * d);
    for (int64_t i = 0; i < num_tokens * d; ++i) jittered[i] = x[i] * noise[i];
    router_x = jittered;
  }
  if (routing_config.token_id_tables == nullptr) {
    const float* bias = routing_config.expert_bias != nullptr
                            ? routing_config.expert_bias->Row(layer)
                            : nullptr;
    ComputeRouting(routing_config, router_x, w.router, num_tokens, d, &r, cache->segment_ids,
                   bias, cache->seq_len);
  }

  ScopedPhase phase(Phase::kPermuteForward);  // within the decoder's router scope
  // Dispatch: gather the kept tokens' rows, expert by expert.
  const int64_t num_kept = r.NumKept();
  cache->expert_out.ResizeUninitialized({num_kept, d});
  float* expert_out = cache->expert_out.data();
  if (dims.precision == GemmPrecision::kBf16) {
    cache->dispatched.ResizeUninitialized({0, d});
    cache->dispatched16.resize(static_cast<size_t>(num_kept * d));
    uint16_t* dispatched = cache->dispatched16.data();
    for (int64_t a = 0; a < num_kept; ++a)
      FloatToBf16(x + r.kept_token[a] * d, dispatched + a * d, d);
  } else {
    cache->dispatched16.clear();
    cache->dispatched.ResizeUninitialized({num_kept, d});
    float* dispatched = cache->dispatched.data();
    for (int64_t a = 0; a < num_kept; ++a)
      std::copy_n(x + r.kept_token[a] * d, d, dispatched + a * d);
  }

  phase.Switch(Phase::kExpertsForward);
  // Experts: each runs on its contiguous block of kept assignments (possibly empty), here or on
  // the ranks that hold them.
  (runner != nullptr ? runner : DefaultRunner())->Forward(layer, dims, w, cache);
  // Each rank of a model group ran its slice of the experts' mlp: sum the partial outputs (the
  // gate gradients need the whole ones, so before the combine rather than after it).
  if (model_comm != nullptr) model_comm->AllReduceSum(expert_out, num_kept * d);

  phase.Switch(Phase::kPermuteForward);
  // Combine: y[t] = sum of gate * expert output over t's kept choices.
  std::fill_n(y, num_tokens * d, 0.0f);
  for (int64_t a = 0; a < num_kept; ++a) {
    Axpy(r.kept_gate[a], expert_out + a * d, y + r.kept_token[a] * d, d);
  }
  return ComputeRouterLossSums(r);
}

void MoeBackward(const MoeDims& dims, const MoeWeights& w, const float* x, MoeCache* cache,
                 const float* dy, double load_balance_scale, double z_scale, const MoeGrads& grads,
                 float* dx, ExpertRunner* runner, int64_t layer, Communicator* model_comm) {
  const int64_t num_tokens = dims.tokens, d = dims.d_model, num_experts = dims.num_experts;
  const Routing& r = cache->routing;
  const int64_t num_kept = r.NumKept();
  ScopedPhase phase(Phase::kPermuteBackward);  // within the decoder's router scope
  // Scratch, zero-filled: d expert_out (A, d), d dispatched (A, d), dgates (T, E), dlogits (T, E).
  ScratchScope scope(cache->Scratch());
  const int64_t work = 2 * num_kept * d + 2 * num_tokens * num_experts;
  float* d_expert_out = cache->Scratch()->Take(work);
  std::fill_n(d_expert_out, work, 0.0f);
  float* d_dispatched = d_expert_out + num_kept * d;
  float* dgates = d_dispatched + num_kept * d;
  float* dlogits = dgates + num_tokens * num_experts;
  const float* expert_out = cache->expert_out.data();

  // Combine backward: to the expert outputs and, through the gates, to the router.
  for (int64_t e = 0; e < num_experts; ++e) {
    for (int64_t a = r.expert_offsets[e]; a < r.expert_offsets[e + 1]; ++a) {
      const float* dy_row = dy + r.kept_token[a] * d;
      Axpy(r.kept_gate[a], dy_row, d_expert_out + a * d, d);
      if (r.from_table) continue;  // table gates are constants
      dgates[r.kept_token[a] * num_experts + e] +=
          static_cast<float>(Dot(dy_row, expert_out + a * d, d));
    }
  }

  phase.Switch(Phase::kExpertsBackward);
  // Experts backward, then dispatch backward (scatter-add into dx).
  (runner != nullptr ? runner : DefaultRunner())
      ->Backward(layer, dims, w, grads, cache, d_expert_out, d_dispatched);
  if (model_comm != nullptr) model_comm->AllReduceSum(d_dispatched, num_kept * d);
  phase.Switch(Phase::kPermuteBackward);
  for (int64_t a = 0; a < num_kept; ++a) {
    AddInPlace(dx + r.kept_token[a] * d, d_dispatched + a * d, d);
  }

  phase.Switch(Phase::kRouterBackward);
  // Router backward: the scores (gates and losses), then logits = x @ w_router. Token-id routing
  // ran no router: nothing to differentiate.
  if (r.from_table) return;
  RouterBackward(r, dgates, load_balance_scale, z_scale, dlogits);
  if (num_tokens == 0) return;
  if (cache->jitter.size() == 0) {
    Gemm({.transpose_a = true, .beta = 1.0f}, d, num_experts, num_tokens, x, dlogits, grads.router);
    Gemm({.transpose_b = true, .beta = 1.0f}, num_tokens, d, num_experts, dlogits, w.router, dx);
    return;
  }
  // Jittered: logits = (x * jitter) @ w_router, so d x += (dlogits @ w_router^T) * jitter. The
  // jittered input (remade as the forward made it) is spent once the router gradient has it, so
  // its buffer takes the product.
  const float* noise = cache->jitter.data();
  float* scratch = cache->Scratch()->Take(num_tokens * d);
  for (int64_t i = 0; i < num_tokens * d; ++i) scratch[i] = x[i] * noise[i];
  Gemm({.transpose_a = true, .beta = 1.0f}, d, num_experts, num_tokens, scratch, dlogits,
       grads.router);
  Gemm({.transpose_b = true}, num_tokens, d, num_experts, dlogits, w.router, scratch);
  for (int64_t i = 0; i < num_tokens * d; ++i) dx[i] += scratch[i] * noise[i];
}

}  // namespace openmoe
