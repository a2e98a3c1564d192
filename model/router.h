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
//
// The routers that came after OpenMoE (README "Routers"), all off by default, so that OpenMoE's
// router above runs the same arithmetic bit for bit:
// - score_function SIGMOID: scores are sigmoid(logits), per expert (DeepSeek-V3); `probs` then
//   holds them. The load-balance loss balances the scores normalised to sum 1 per token (as
//   Megatron-Core does); the z-loss is the logits' logsumexp^2 in both.
// - normalize_top_k: the combine weight of a kept choice is its score over the sum of the token's
//   top_k scores (dropped choices included: renormalised before capacity, as Megatron-Core).
// - selection bias (auxiliary-loss-free balancing, model/expert_bias.h): a per-expert bias added
//   to the scores when choosing (top-k and group scores), never to the combine weights.
// - group-limited routing: experts in num_expert_groups groups of consecutive ids; a token's group
//   score is the sum of its top_k / groups_per_token (at least 1) highest choosing scores in the
//   group; it keeps its groups_per_token best groups (ties to the lower group) and takes its
//   top_k among their experts.
// - load_balance_scope: the unit the loss balances over. Per unit of U tokens,
//   E * sum_e (n_e / U) * (S_e / U), n_e the unit's choices of e, S_e its scores' sum, weighted by
//   U / group_size so that the objective's division by the number of groups makes it the mean over
//   units: GROUP (U = group_size, OpenMoE), SEQUENCE (U = a row's tokens), GLOBAL_BATCH (U = the
//   batch's tokens on every rank of balance_comm; ComputeRouting sums n_e and U over it, so it is
//   collective there). Each unit's n_e is a constant of the gradient (ST-MoE).
// - selection EXPERTS_CHOOSE (Zhou et al., 2022): each expert takes the C tokens of the group with
//   its highest scores (C from the capacity formula; ties to the lower token), a token gets any
//   number of experts (none: it passes through the residual). Routing then has top_k = E: choice j
//   of a token is its j-th most probable expert, kept where that expert took it. No load-balance
//   loss (balanced by construction, as flaxformer's experts-choose router); the z-loss stays.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "proto/job.pb.h"

namespace openmoe {

class Communicator;   // core/communicator.h
class ExpertBias;     // model/expert_bias.h
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
  // The routers after OpenMoE (see above).
  RouterSelection selection = TOKENS_CHOOSE;
  ScoreFunction score_function = SOFTMAX;
  bool normalize_top_k = false;
  int64_t num_expert_groups = 1;
  int64_t groups_per_token = 1;
  LoadBalanceScope load_balance_scope = GROUP;
  // GLOBAL_BATCH: the ranks holding the rest of the batch, each token on one of them; not owned.
  // Null: this process holds the whole batch.
  Communicator* balance_comm = nullptr;
  // Auxiliary-loss-free balancing: the selection biases of every layer; not owned, null: none.
  const ExpertBias* expert_bias = nullptr;
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
  Tensor probs;   // (T, E) fp32: the scores, softmax(logits) or sigmoid(logits)
  Tensor lse;     // (T) logsumexp(logits), for the router z-loss
  std::vector<int32_t> choice_expert;  // (T, k) expert of choice j; choices by descending prob,
                                       // ties to the lower expert id
  std::vector<int32_t> choice_slot;    // (T, k) slot within the expert's group buffer, -1 if dropped
  // A token with choice_expert -1 (all its k choices) was not routed: padding under
  // ignore_padding_tokens.
  // Routed by a token-id table (model/token_id_routing.h): logits and lse are empty, probs holds
  // each token's table row, and there are no router losses (nothing to train).
  bool from_table = false;
  ScoreFunction score_function = SOFTMAX;
  bool experts_choose = false;
  // normalize_top_k: (T) the sum of each token's top_k scores, which divides its gates; empty off.
  std::vector<float> gate_norm;
  // The load-balance units: `balance_unit` tokens each, in token order; GLOBAL_BATCH: one unit of
  // the local tokens whose choice counts (E) and size are the whole batch's (balance_counts,
  // balance_unit). balance_unit 0: no load-balance loss (experts choose).
  LoadBalanceScope balance_scope = GROUP;
  int64_t balance_unit = 0;
  std::vector<double> balance_counts;

  // Kept assignments by expert in dispatch order: expert e owns entries
  // [expert_offsets[e], expert_offsets[e+1]), sorted by (group, slot).
  std::vector<int64_t> expert_offsets;  // (E + 1)
  std::vector<int64_t> kept_token;      // (A) token index of each kept assignment
  std::vector<int32_t> kept_choice;     // (A) choice index j of each kept assignment
  std::vector<float> kept_gate;         // (A) Gate(token, expert): the combine weight

  int64_t NumGroups() const { return group_size > 0 ? num_tokens / group_size : 0; }
  int64_t NumKept() const { return static_cast<int64_t>(kept_token.size()); }
  bool IsRouted(int64_t t) const { return choice_expert[t * top_k] >= 0; }
  // The combine weight of token t's choice of expert e: its score, over gate_norm[t] if set.
  float Gate(int64_t t, int64_t e) const {
    const float p = probs[t * num_experts + e];
    return gate_norm.empty() ? p : p / gate_norm[t];
  }
};

// x: (T, d) router input; w_router: (d, E). T must be a multiple of config.group_size.
// segment_ids (T): needed with config.ignore_padding_tokens (null: every token is real).
// selection_bias (E): added to the scores when choosing (null: none). sequence_length: the
// tokens of one row of the batch, needed by the SEQUENCE scope. Collective over
// config.balance_comm under GLOBAL_BATCH.
void ComputeRouting(const RoutingConfig& config, const float* x, const float* w_router,
                    int64_t num_tokens, int64_t d_model, Routing* routing,
                    const int32_t* segment_ids = nullptr, const float* selection_bias = nullptr,
                    int64_t sequence_length = 0);

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
  double load_balance = 0;  // sum over units of E * sum_e f_e * P_e * U / group_size
  double z_loss = 0;        // sum over tokens of logsumexp(logits)^2
};
RouterLossSums ComputeRouterLossSums(const Routing& routing);

// The router's backward: dgates (T, E) holds d loss / d Gate(t, e) of the kept choices (0
// elsewhere); load_balance_scale = d loss / d RouterLossSums::load_balance, z_scale likewise for
// the z-loss sum. dlogits (T, E) += the gradient of both through the scores. f_e is treated as a
// constant (it comes from the argmax), as in ST-MoE.
void RouterBackward(const Routing& routing, const float* dgates, double load_balance_scale,
                    double z_scale, float* dlogits);

// Per-layer routing statistics for metrics. seq_len maps tokens to positions (t % seq_len).
// Unrouted tokens (padding under ignore_padding_tokens) are left out, `tokens` included. Experts
// choosing: an expert's routed and kept counts are the tokens it took, dropped_by_choice is 0, and
// by position the counts are of tokens (routed) and of tokens no expert took (dropped).
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
