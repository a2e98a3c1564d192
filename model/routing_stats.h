// Statistics of routing decisions for `openmoe analyze` (OpenMoE paper, sections 4-5): pure
// functions of recorded decisions, no model.
//
// The unit is one token occurrence in one MoE layer: its token id, the source it came from, its
// position in the row, and its top_k choices (expert, dropped over capacity or not). Top-1 means
// choice 0, the router's first choice before capacity (what the router decided, dropped or not).
//
//   token-id specialisation: over the ids seen at least `min_count` times, the share of an id's
//     occurrences whose top-1 is the id's most frequent expert, averaged over ids weighted by
//     their counts (= sum over ids of the max count / sum of counts). 1 when every id always
//     goes to one expert.
//   control: the same statistic when each occurrence's expert is drawn independently from the
//     layer's overall top-1 distribution (over every occurrence recorded). Computed by seeded
//     sampling (CounterRng, `draws` repetitions averaged), not in closed form: the expectation of
//     the largest multinomial count has no cheap closed form for counts in the thousands. It is
//     above 1/E for finite counts (the max of E noisy counts), which is why it is the baseline.
//   expert share: a distribution over experts of top-1 choices (domain specialisation per source),
//     compared with the Jensen-Shannon divergence in bits (0 = same, 1 = disjoint).
//   drop by position: per bucket of position (bucket = position * buckets / seq_len), per choice
//     j, the fraction of occurrences whose choice j was dropped.
//   agreement: per occurrence, top-1 equal in two recordings of the same tokens (two checkpoints);
//     and for the token-id -> expert table (each counted id's most frequent expert, ties to the
//     lower expert), the count-weighted share of ids mapped to the same expert.
#pragma once

#include <cstdint>
#include <vector>

namespace openmoe {

// One MoE layer's decisions over a token set, one entry per occurrence.
struct RoutedTokens {
  int64_t num_experts = 0;
  int64_t top_k = 0;
  std::vector<int32_t> token;     // (n) token id
  std::vector<int32_t> source;    // (n) source index
  std::vector<int32_t> position;  // (n) position in its row
  std::vector<int32_t> expert;    // (n, top_k) choice j's expert
  std::vector<uint8_t> dropped;   // (n, top_k) 1: choice j was over capacity

  int64_t size() const { return static_cast<int64_t>(token.size()); }
  // experts, slots: (top_k) one token's choice_expert / choice_slot (slot < 0: dropped).
  void Add(int32_t token_id, int32_t source_index, int32_t pos, const int32_t* experts,
           const int32_t* slots);
  // (n) choice 0's expert.
  std::vector<int32_t> Top1() const;
  // The occurrences of one source.
  RoutedTokens OfSource(int32_t source_index) const;
};

struct Specialization {
  double value = 0;         // count-weighted share routed to the id's most frequent expert
  int64_t ids = 0;          // ids with at least min_count occurrences
  int64_t occurrences = 0;  // their occurrences
};

// ids, top1: (n). Ids seen fewer than min_count times are left out.
Specialization TokenSpecialization(const std::vector<int32_t>& ids,
                                   const std::vector<int32_t>& top1, int64_t num_experts,
                                   int64_t min_count);

// The control: the same counted ids and counts, experts drawn from ExpertShare(top1).
Specialization SpecializationControl(const std::vector<int32_t>& ids,
                                     const std::vector<int32_t>& top1, int64_t num_experts,
                                     int64_t min_count, int64_t draws, uint64_t seed);

// (E) fraction of `top1` equal to each expert (all 0 for no tokens).
std::vector<double> ExpertShare(const std::vector<int32_t>& top1, int64_t num_experts);

// Jensen-Shannon divergence of two distributions, bits (log base 2), in [0, 1].
double JensenShannon(const std::vector<double>& p, const std::vector<double>& q);

struct TableEntry {
  int32_t id = 0;
  int32_t expert = 0;  // most frequent top-1 expert (ties: the lower expert)
  int64_t count = 0;   // occurrences of the id
};
// Ids with at least min_count occurrences, ascending by id.
std::vector<TableEntry> TokenExpertTable(const std::vector<int32_t>& ids,
                                         const std::vector<int32_t>& top1, int64_t num_experts,
                                         int64_t min_count);

// Fraction of positions where a[i] == b[i] (same size; 0 for empty).
double Top1Agreement(const std::vector<int32_t>& a, const std::vector<int32_t>& b);
// Count-weighted (by b's counts) share of b's table ids that a's table maps to the same expert
// (an id missing from a counts as disagreeing).
double TableAgreement(const std::vector<TableEntry>& a, const std::vector<TableEntry>& b);

struct TopToken {
  int32_t id = 0;
  int64_t count = 0;  // occurrences of the id routed top-1 to the expert
  double share = 0;   // count / occurrences of the id
};
// (E) per expert, the `per_expert` ids with the most top-1 occurrences routed to it (ties: the
// lower id), among ids seen at least min_count times.
std::vector<std::vector<TopToken>> TopTokensPerExpert(const std::vector<int32_t>& ids,
                                                      const std::vector<int32_t>& top1,
                                                      int64_t num_experts, int64_t min_count,
                                                      int64_t per_expert);

struct DropByPosition {
  std::vector<int64_t> tokens;                 // (buckets) occurrences per bucket
  std::vector<std::vector<double>> by_choice;  // (top_k, buckets) dropped fraction of choice j
};
DropByPosition DropFractionByPosition(const RoutedTokens& routed, int64_t seq_len,
                                      int64_t buckets);

}  // namespace openmoe
