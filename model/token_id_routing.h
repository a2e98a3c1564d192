// Token-id routing (OpenMoE section 5: experts specialise by token id early, so replace the
// trainable router by a table): the router's own decisions, counted per token id before the
// switch, become a table token id -> k experts, and after the switch every token goes to its id's
// experts without running the router.
//
// Statistics, per MoE layer and token id (over the padded vocabulary V), accumulated from every
// routed token of every step before the switch (padding too, unless ignore_padding_tokens):
//   occurrences   how many tokens had this id
//   chosen[e]     how many of them chose expert e (as any of their k choices, before capacity)
//   prob_sum[e]   the sum of the router probability they gave e
// The table, built once from the statistics (the same on every rank when they are summed over
// the ranks first):
//   experts of id  the k experts with the largest chosen[e], by descending count, ties to the
//                  lower expert id;
//   gates of id    prob_sum[e] / occurrences: the router's mean probability for each expert, so the
//                  combine weight of a kept choice has the router's scale (not renormalised, as
//                  the router's gates);
//   an id never seen: experts (id + j) mod E for j = 0..k-1 (spreads unseen ids over the experts)
//                  and gates 1/E (what a router with zero logits gives).
// Capacity and drops apply as with the router (AssignSlots); there are no router losses.
//
// The statistics are integers, so that their sums do not depend on the order of addition (over
// ranks, microbatches, or a checkpoint in between): one flat int64 buffer (M, V, 1 + 2E) of
// [occurrences, chosen (E), prob_sum (E)] per (layer, id), prob_sum in units of 2^-20 (each
// token's probability rounded to the nearest unit). A rank counts into pending(); the caller sums
// pending over the ranks and calls MergePending. For checkpoints, Encode writes each integer as
// two floats hi + lo (hi = float(v), lo = v - hi), exact for |v| < 2^48, and Decode reads them back.
#pragma once

#include <cstdint>
#include <vector>

#include "model/router.h"

namespace openmoe {

class TokenIdTables {
 public:
  // moe_layers: the decoder's MoE layer indices (the keys MoeForward gets); vocab: the padded
  // vocabulary size.
  TokenIdTables(std::vector<int64_t> moe_layers, int64_t vocab, int64_t num_experts,
                int64_t top_k);

  // Adds the routed tokens of `routing` (a router routing of `layer`) to pending(): token t has
  // id token_ids[t].
  void Count(int64_t layer, const Routing& routing, const int32_t* token_ids);

  static constexpr double kProbUnit = 1.0 / (1 << 20);

  // Statistics: (M, V, 1 + 2E) as described above.
  std::vector<int64_t> StatsShape() const;
  const std::vector<int64_t>& stats() const { return stats_; }
  // Counted here since the last MergePending; same layout.
  std::vector<int64_t>& pending() { return pending_; }
  // stats as (M, V, 1 + 2E, 2) floats (hi, lo); Decode replaces stats by such a buffer.
  std::vector<int64_t> EncodedShape() const;
  void Encode(float* out) const;
  void Decode(const float* in);
  // stats += pending; pending = 0.
  void MergePending();
  // Drops pending counts and the table (after stats were replaced, e.g. by a checkpoint).
  void Reset();

  // Builds the table from stats() (pending is not included).
  void Build();
  bool built() const { return built_; }

  // After Build: the k experts and the E gates of `id` in `layer`.
  const int32_t* Experts(int64_t layer, int32_t id) const;
  const float* Gates(int64_t layer, int32_t id) const;

  const std::vector<int64_t>& moe_layers() const { return moe_layers_; }
  int64_t vocab() const { return vocab_; }
  int64_t num_experts() const { return num_experts_; }
  int64_t top_k() const { return top_k_; }

 private:
  int64_t Slot(int64_t layer) const;  // index of `layer` in moe_layers_
  int64_t Width() const { return 1 + 2 * num_experts_; }

  std::vector<int64_t> moe_layers_;
  int64_t vocab_, num_experts_, top_k_;
  std::vector<int64_t> stats_;
  std::vector<int64_t> pending_;
  bool built_ = false;
  std::vector<int32_t> experts_;  // (M, V, k)
  std::vector<float> gates_;      // (M, V, E)
};

// Routes num_tokens tokens of `layer` by their ids through tables (built): choice j of token t is
// Experts(layer, token_ids[t])[j], probs row t is Gates(layer, token_ids[t]); then AssignSlots.
// With config.ignore_padding_tokens, tokens of segment id 0 are not routed (segment_ids needed).
// routing->from_table is set; logits and lse are left empty.
void RouteByTokenId(const RoutingConfig& config, const TokenIdTables& tables, int64_t layer,
                    const int32_t* token_ids, const int32_t* segment_ids, int64_t num_tokens,
                    Routing* routing);

}  // namespace openmoe
