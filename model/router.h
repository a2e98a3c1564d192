// Top-k token-choice routing with fixed expert capacity (OpenMoE / ST-MoE), in fp32.
//
// A batch's tokens, flattened row-major, are cut into routing groups of `group_size` tokens.
// Within a group, capacity per expert is C = max(min_capacity, round(capacity_factor * G / E))
// (no factor k). Slots are filled by all first choices in token order, then all second choices
// in token order (DROP_PROBABILITY_ORDER: tokens ordered by top-1 probability instead); an
// assignment whose slot index is >= C is dropped. Combine weights are the raw softmax
// probabilities of the kept choices (not renormalised).
//
// ignore_padding_tokens (flaxformer's TokensChooseMaskedRouter): a token whose segment id is 0 is
// not routed: it has no choices (choice_expert -1), claims no slot, adds nothing to the MoE's
// output, to the load-balance sums (f_e and P_e still divide by the whole group size, as
// flaxformer's means do) or to the router z-loss sum (flaxformer zeroes its logits, which adds
// the constant log(E)^2 with no gradient; we add 0), and is left out of the RoutingStats.
// Off, padding is routed like any token (what OpenMoE's runs did).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "proto/job.pb.h"

namespace openmoe {

class TokenIdTables;  // model/token_id_routing.h

struct RoutingConfig {
  int64_t num_experts = 0;
  int64_t top_k = 2;
  int64_t group_size = 0;
  double capacity_factor = 1.25;
  int64_t min_capacity = 4;
  DropPolicy drop_policy = DROP_TOKEN_ORDER;
  bool dropless = false;
  // Router jitter (model/router_jitter.h): training only; 0 disables.
  double jitter_noise = 0;
  uint64_t jitter_seed = 0;
  // Segment id 0 is not routed (see above); needs the segment ids.
  bool ignore_padding_tokens = false;
  // Non-null: route by token id through these tables (model/token_id_routing.h) instead of the
  // router. Not owned; must outlive every use of the config.
  const TokenIdTables* token_id_tables = nullptr;
};

// The capacity formula, written once. Dropless routing has capacity group_size (never binding).
int64_t ExpertCapacity(const RoutingConfig& config);

// The result of routing num_tokens tokens. Choice j of token t is assignment t * top_k + j.
struct Routing {
  int64_t num_tokens = 0;
  int64_t num_experts = 0;
  int64_t top_k = 0;
  int64_t group_size = 0;
  int64_t capacity = 0;

  Tensor logits;  // (T, E) fp32: x @ w_router
  Tensor probs;   // (T, E) fp32: softmax(logits)
  Tensor lse;     // (T) logsumexp(logits), for the router z-loss
  std::vector<int32_t> choice_expert;  // (T, k) expert of choice j; choices by descending prob,
                                       // ties to the lower expert id
  std::vector<int32_t> choice_slot;    // (T, k) slot within the expert's group buffer, -1 if dropped
  // A token with choice_expert -1 (all its k choices) was not routed: padding under
  // ignore_padding_tokens.
  // Routed by a token-id table (model/token_id_routing.h): logits and lse are empty, probs holds
  // each token's table row, and there are no router losses (nothing to train).
  bool from_table = false;

  // Kept assignments by expert in dispatch order: expert e owns entries
  // [expert_offsets[e], expert_offsets[e+1]), sorted by (group, slot).
  std::vector<int64_t> expert_offsets;  // (E + 1)
  std::vector<int64_t> kept_token;      // (A) token index of each kept assignment
  std::vector<int32_t> kept_choice;     // (A) choice index j of each kept assignment
  std::vector<float> kept_gate;         // (A) probs[token, expert]: the combine weight

  int64_t NumGroups() const { return group_size > 0 ? num_tokens / group_size : 0; }
  int64_t NumKept() const { return static_cast<int64_t>(kept_token.size()); }
  bool IsRouted(int64_t t) const { return choice_expert[t * top_k] >= 0; }
};

// x: (T, d) router input; w_router: (d, E). T must be a multiple of config.group_size.
// segment_ids (T): needed with config.ignore_padding_tokens (null: every token is real).
void ComputeRouting(const RoutingConfig& config, const float* x, const float* w_router,
                    int64_t num_tokens, int64_t d_model, Routing* routing,
                    const int32_t* segment_ids = nullptr);

// The second half of routing, shared by the router and the token-id tables: from r.probs and
// r.choice_expert (the shape fields set), hands out capacity slots and fills choice_slot and the
// dispatch lists (kept_*, expert_offsets). Unrouted tokens (choice_expert -1) claim nothing.
void AssignSlots(const RoutingConfig& config, Routing* r);

// The first half's bookkeeping, shared by the router and the token-id tables: checks the shapes
// (top_k within the experts, whole routing groups, segment ids where padding is ignored) and sets
// the sizes, the capacity and from_table of *r.
void StartRouting(const RoutingConfig& config, int64_t num_tokens, const int32_t* segment_ids,
                  bool from_table, Routing* r);

// Sums that make the router losses; the caller divides by the global number of groups / tokens
// (so gradient accumulation and any layout give the same loss). Unrouted tokens add nothing;
// table routing has no router losses (zeros).
struct RouterLossSums {
  double load_balance = 0;  // sum over groups of E * sum_e f_e * P_e
  double z_loss = 0;        // sum over tokens of logsumexp(logits)^2
};
RouterLossSums ComputeRouterLossSums(const Routing& routing);

// d(loss)/d(logits) of the router losses: load_balance_scale = d loss / d (sum over groups of the
// per-group load-balance loss), z_scale likewise for the z-loss sum. dlogits (T, E) += ... .
// f_e is treated as a constant (it comes from the argmax), as in ST-MoE.
void RouterLossBackward(const Routing& routing, double load_balance_scale, double z_scale,
                        float* dlogits);

// Backward of probs = softmax(logits) for the gate gradients: dprobs (T, E) -> dlogits (T, E) +=.
void RouterSoftmaxBackward(const Routing& routing, const float* dprobs, float* dlogits);

// Per-layer routing statistics for metrics. seq_len maps tokens to positions (t % seq_len).
// Unrouted tokens (padding under ignore_padding_tokens) are left out, `tokens` included.
struct RoutingStats {
  std::vector<int64_t> routed_per_expert;  // (E) assignments before dropping
  std::vector<int64_t> kept_per_expert;    // (E) assignments after dropping
  std::vector<int64_t> dropped_by_choice;  // (k) dropped assignments of choice j
  std::vector<int64_t> dropped_by_position_bucket;  // (buckets) dropped assignments
  std::vector<int64_t> routed_by_position_bucket;   // (buckets) all assignments
  int64_t tokens = 0;
  int64_t tokens_fully_dropped = 0;  // every choice dropped: the MoE adds 0
  double entropy_sum = 0;            // sum over tokens of -sum_e p log p (nats)
  void Add(const RoutingStats& other);
};
RoutingStats ComputeRoutingStats(const Routing& routing, int64_t seq_len, int64_t buckets);

}  // namespace openmoe
