#include "model/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"
#include "core/communicator.h"
#include "core/gemm.h"
#include "core/kernels.h"

namespace openmoe {

// Rounding matches the reference's Python `int(round(capacity_factor * group_size / E))`: half to
// even (std::nearbyint in the default rounding mode), evaluated in double in the same order, so
// 1.25 * 6 / 3 = 2.5 gives 2 and 1.75 * 8 / 4 = 3.5 gives 4.
int64_t ExpertCapacity(const RoutingConfig& config) {
  OPENMOE_CHECK(config.num_experts > 0 && config.group_size > 0);
  if (config.dropless) return config.group_size;
  const double raw = config.capacity_factor * static_cast<double>(config.group_size) /
                     static_cast<double>(config.num_experts);
  return std::max(config.min_capacity, static_cast<int64_t>(std::nearbyint(raw)));
}

namespace {

// Marks (taken = 1) the experts of every group token t does not keep: its groups_per_token groups
// with the highest sums of their `per_group_top` best choosing keys stay, ties to the lower group.
void ExcludeGroups(const RoutingConfig& config, const float* key, int64_t num_experts,
                   std::vector<char>* taken) {
  const int64_t groups = config.num_expert_groups, per = num_experts / groups;
  const int64_t top = std::clamp<int64_t>(config.top_k / config.groups_per_token, 1, per);
  std::vector<double> group_score(groups);
  std::vector<float> members(per);
  for (int64_t g = 0; g < groups; ++g) {
    std::copy_n(key + g * per, per, members.begin());
    std::partial_sort(members.begin(), members.begin() + top, members.end(), std::greater<>());
    group_score[g] = std::accumulate(members.begin(), members.begin() + top, 0.0);
  }
  std::vector<char> kept(groups, 0);
  for (int64_t m = 0; m < config.groups_per_token; ++m) {
    int64_t best = -1;
    for (int64_t g = 0; g < groups; ++g)
      if (!kept[g] && (best < 0 || group_score[g] > group_score[best])) best = g;
    OPENMOE_CHECK(best >= 0);  // groups_per_token <= num_expert_groups (ValidateJob)
    kept[best] = 1;
  }
  for (int64_t g = 0; g < groups; ++g)
    if (!kept[g]) std::fill_n(taken->begin() + g * per, per, 1);
}

// choice_expert (T, k): the k experts of each token with the highest choosing keys (its scores,
// plus the selection bias if any; within its kept groups under group-limited routing), by
// descending key, ties to the lower expert id.
void SelectTopK(const RoutingConfig& config, const float* probs, const float* bias,
                int64_t num_tokens, int64_t num_experts, int64_t top_k,
                std::vector<int32_t>* choice_expert) {
  choice_expert->assign(num_tokens * top_k, -1);
  const bool group_limited = config.num_expert_groups > 1 &&
                             config.groups_per_token < config.num_expert_groups;
  std::vector<char> taken(num_experts);
  std::vector<float> biased(bias != nullptr ? num_experts : 0);
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* p = probs + t * num_experts;
    if (bias != nullptr) {
      for (int64_t e = 0; e < num_experts; ++e) biased[e] = p[e] + bias[e];
      p = biased.data();
    }
    std::fill(taken.begin(), taken.end(), 0);
    if (group_limited) ExcludeGroups(config, p, num_experts, &taken);
    for (int64_t j = 0; j < top_k; ++j) {
      int32_t best = -1;
      for (int64_t e = 0; e < num_experts; ++e) {
        if (!taken[e] && (best < 0 || p[e] > p[best])) best = static_cast<int32_t>(e);
      }
      taken[best] = 1;
      (*choice_expert)[t * top_k + j] = best;
    }
  }
}

// Tokens of the group starting at `first` in the order they claim slots (within each choice rank).
std::vector<int64_t> ClaimOrder(const RoutingConfig& config, const Routing& r, int64_t first) {
  std::vector<int64_t> order(config.group_size);
  std::iota(order.begin(), order.end(), first);
  if (config.drop_policy == DROP_PROBABILITY_ORDER) {
    // Unrouted tokens (choice -1) claim nothing; where they sort does not matter.
    auto top1 = [&r](int64_t t) {
      const int32_t e = r.choice_expert[t * r.top_k];
      return e < 0 ? -1.0f : r.probs[t * r.num_experts + e];
    };
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return top1(a) > top1(b); });
  }
  return order;
}

// From the kept assignments (t * top_k + j) in the order their slots were handed out, which per
// expert is (group, slot) order: the dispatch lists (expert_offsets, kept_*).
void BuildDispatchLists(const std::vector<int64_t>& claimed, Routing* routing) {
  Routing& r = *routing;
  const int64_t num_experts = r.num_experts, top_k = r.top_k;
  std::vector<int64_t> kept_per_expert(num_experts, 0);
  for (int64_t a : claimed) ++kept_per_expert[r.choice_expert[a]];
  // Counting sort of the kept assignments by expert (stable, so (group, slot) order survives).
  r.expert_offsets.assign(num_experts + 1, 0);
  for (int64_t e = 0; e < num_experts; ++e) {
    r.expert_offsets[e + 1] = r.expert_offsets[e] + kept_per_expert[e];
  }
  const size_t num_kept = claimed.size();
  r.kept_token.resize(num_kept);
  r.kept_choice.resize(num_kept);
  r.kept_gate.resize(num_kept);
  std::vector<int64_t> cursor(r.expert_offsets.begin(), r.expert_offsets.end() - 1);
  for (int64_t a : claimed) {
    const int64_t t = a / top_k;
    const int32_t e = r.choice_expert[a];
    const int64_t i = cursor[e]++;
    r.kept_token[i] = t;
    r.kept_choice[i] = static_cast<int32_t>(a % top_k);
    r.kept_gate[i] = r.Gate(t, e);
  }
}

// Experts choose: choice_expert (T, E) ranks every expert for each routed token (descending
// score, ties to the lower id); then each expert of each group takes its `capacity` routed tokens
// with the highest scores (ties to the lower token), slot = rank among them.
void ExpertsChoose(Routing* routing) {
  Routing& r = *routing;
  const int64_t num_experts = r.num_experts, group_size = r.group_size;
  std::vector<int32_t> position(r.num_tokens * num_experts);  // where expert e sits in t's ranking
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    if (!r.IsRouted(t)) continue;
    int32_t* ranking = r.choice_expert.data() + t * num_experts;
    const float* p = r.probs.data() + t * num_experts;
    std::iota(ranking, ranking + num_experts, 0);
    std::stable_sort(ranking, ranking + num_experts, [p](int32_t a, int32_t b) { return p[a] > p[b]; });
    for (int64_t j = 0; j < num_experts; ++j) position[t * num_experts + ranking[j]] = j;
  }
  r.choice_slot.assign(r.num_tokens * num_experts, -1);
  std::vector<int64_t> claimed, routed, candidates;
  for (int64_t g = 0; g < r.NumGroups(); ++g) {
    routed.clear();
    for (int64_t t = g * group_size; t < (g + 1) * group_size; ++t)
      if (r.IsRouted(t)) routed.push_back(t);
    const int64_t take = std::min<int64_t>(r.capacity, routed.size());
    for (int64_t e = 0; e < num_experts; ++e) {
      candidates = routed;  // partial_sort reorders its own copy
      auto score = [&](int64_t t) { return r.probs[t * num_experts + e]; };
      std::partial_sort(candidates.begin(), candidates.begin() + take, candidates.end(),
                        [&](int64_t a, int64_t b) {
                          return score(a) > score(b) || (score(a) == score(b) && a < b);
                        });
      for (int64_t slot = 0; slot < take; ++slot) {
        const int64_t t = candidates[slot];
        const int64_t a = t * num_experts + position[t * num_experts + e];
        r.choice_slot[a] = static_cast<int32_t>(slot);
        claimed.push_back(a);
      }
    }
  }
  BuildDispatchLists(claimed, &r);
}

// gate_norm[t]: the sum of token t's top_k scores (1 for an unrouted token).
void NormalizeTopK(Routing* routing) {
  Routing& r = *routing;
  r.gate_norm.assign(r.num_tokens, 1.0f);
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    if (!r.IsRouted(t)) continue;
    float sum = 0;
    for (int64_t j = 0; j < r.top_k; ++j)
      sum += r.probs[t * r.num_experts + r.choice_expert[t * r.top_k + j]];
    r.gate_norm[t] = sum;
  }
}

// GLOBAL_BATCH: the choice counts (E) and the token count of the whole batch, summed over
// config.balance_comm (collective there).
void CountGlobalBalance(const RoutingConfig& config, Routing* routing) {
  Routing& r = *routing;
  std::vector<double> counts(r.num_experts + 1, 0.0);
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    if (!r.IsRouted(t)) continue;
    for (int64_t j = 0; j < r.top_k; ++j) counts[r.choice_expert[t * r.top_k + j]] += 1.0;
  }
  counts[r.num_experts] = static_cast<double>(r.num_tokens);
  if (config.balance_comm != nullptr)
    config.balance_comm->AllReduceSum(counts.data(), static_cast<int64_t>(counts.size()));
  r.balance_unit = static_cast<int64_t>(counts[r.num_experts]);
  counts.pop_back();
  r.balance_counts = std::move(counts);
}

}  // namespace

void ComputeRouting(const RoutingConfig& config, const float* x, const float* w_router,
                    int64_t num_tokens, int64_t d_model, Routing* routing,
                    const int32_t* segment_ids, const float* selection_bias,
                    int64_t sequence_length) {
  const int64_t num_experts = config.num_experts;
  StartRouting(config, num_tokens, segment_ids, /*from_table=*/false, routing);
  Routing& r = *routing;
  if (r.balance_scope == SEQUENCE && !r.experts_choose) {
    OPENMOE_CHECK_MSG(sequence_length > 0 && num_tokens % sequence_length == 0,
                      "%lld tokens are not whole sequences of %lld",
                      static_cast<long long>(num_tokens), static_cast<long long>(sequence_length));
    r.balance_unit = sequence_length;
  }
  const int64_t top_k = r.top_k;

  r.logits.ResizeUninitialized({num_tokens, num_experts});
  r.probs.ResizeUninitialized({num_tokens, num_experts});
  r.lse.ResizeUninitialized({num_tokens});
  if (num_tokens > 0) {
    Gemm({}, num_tokens, num_experts, d_model, x, w_router, r.logits.data());
    SoftmaxRows(r.logits.data(), num_tokens, num_experts, r.probs.data(), r.lse.data());
    if (config.score_function == SIGMOID) {
      const float* logits = r.logits.data();
      float* scores = r.probs.data();
      for (int64_t i = 0; i < num_tokens * num_experts; ++i) scores[i] = Sigmoid(logits[i]);
    }
  }
  if (r.experts_choose) {
    r.choice_expert.assign(num_tokens * top_k, 0);  // every routed token ranks all experts below
  } else {
    SelectTopK(config, r.probs.data(), selection_bias, num_tokens, num_experts, top_k,
               &r.choice_expert);
  }
  if (config.ignore_padding_tokens) {
    for (int64_t t = 0; t < num_tokens; ++t) {
      if (segment_ids[t] != 0) continue;
      std::fill_n(r.choice_expert.begin() + t * top_k, top_k, -1);
    }
  }
  if (config.normalize_top_k) NormalizeTopK(&r);
  if (r.balance_scope == GLOBAL_BATCH && !r.experts_choose) CountGlobalBalance(config, &r);
  if (r.experts_choose) {
    ExpertsChoose(&r);
  } else {
    AssignSlots(config, &r);
  }
}

void StartRouting(const RoutingConfig& config, int64_t num_tokens, const int32_t* segment_ids,
                  bool from_table, Routing* r) {
  OPENMOE_CHECK(config.top_k >= 1 && config.top_k <= config.num_experts);
  OPENMOE_CHECK_MSG(config.group_size > 0 && num_tokens % config.group_size == 0,
                    "%lld tokens are not a multiple of group_size %lld",
                    static_cast<long long>(num_tokens),
                    static_cast<long long>(config.group_size));
  OPENMOE_CHECK_MSG(!config.ignore_padding_tokens || segment_ids != nullptr || num_tokens == 0,
                    "ignore_padding_tokens needs the segment ids");
  const bool experts_choose = config.selection == EXPERTS_CHOOSE;
  OPENMOE_CHECK_MSG(config.num_expert_groups >= 1 &&
                        config.num_experts % config.num_expert_groups == 0 &&
                        config.groups_per_token >= 1 &&
                        config.groups_per_token <= config.num_expert_groups &&
                        config.top_k <= config.groups_per_token *
                                            (config.num_experts / config.num_expert_groups),
                    "expert groups: %lld of %lld experts, %lld per token, top_k %lld",
                    static_cast<long long>(config.num_expert_groups),
                    static_cast<long long>(config.num_experts),
                    static_cast<long long>(config.groups_per_token),
                    static_cast<long long>(config.top_k));
  r->num_tokens = num_tokens;
  r->num_experts = config.num_experts;
  r->top_k = experts_choose ? config.num_experts : config.top_k;
  r->group_size = config.group_size;
  r->capacity = ExpertCapacity(config);
  r->from_table = from_table;
  r->score_function = config.score_function;
  r->experts_choose = experts_choose;
  r->gate_norm.clear();
  r->balance_scope = config.load_balance_scope;
  r->balance_counts.clear();
  // GLOBAL_BATCH: this call's tokens until CountGlobalBalance sums the batch's; SEQUENCE: set by
  // ComputeRouting, which knows the rows.
  r->balance_unit = experts_choose || from_table                    ? 0
                    : config.load_balance_scope == GLOBAL_BATCH ? num_tokens
                                                                  : config.group_size;
}

void AssignSlots(const RoutingConfig& config, Routing* routing) {
  Routing& r = *routing;
  const int64_t num_tokens = r.num_tokens, num_experts = r.num_experts, top_k = r.top_k;
  const int64_t group_size = r.group_size;
  // Slots, group by group: choice rank j outer, tokens in claim order inner. `claimed` lists the
  // kept assignments in the order their slots were handed out, so per expert it is sorted by
  // (group, slot).
  r.choice_slot.assign(num_tokens * top_k, -1);
  std::vector<int64_t> claimed;
  std::vector<int64_t> fill(num_experts);
  for (int64_t g = 0; g < r.NumGroups(); ++g) {
    std::fill(fill.begin(), fill.end(), 0);
    const std::vector<int64_t> order = ClaimOrder(config, r, g * group_size);
    for (int64_t j = 0; j < top_k; ++j) {
      for (int64_t t : order) {
        const int64_t a = t * top_k + j;
        const int32_t e = r.choice_expert[a];
        if (e < 0) continue;  // not routed: takes no capacity
        const int64_t slot = fill[e]++;
        if (slot >= r.capacity) continue;
        r.choice_slot[a] = static_cast<int32_t>(slot);
        claimed.push_back(a);
      }
    }
  }
  BuildDispatchLists(claimed, &r);
}

void RoutingStats::Add(const RoutingStats& other) {
  auto add = [](std::vector<int64_t>& a, const std::vector<int64_t>& b) {
    if (a.empty()) a.assign(b.size(), 0);
    OPENMOE_CHECK_MSG(a.size() == b.size() || b.empty(), "adding stats of sizes %zu and %zu",
                      a.size(), b.size());
    for (size_t i = 0; i < b.size(); ++i) a[i] += b[i];
  };
  add(routed_per_expert, other.routed_per_expert);
  add(kept_per_expert, other.kept_per_expert);
  add(dropped_by_choice, other.dropped_by_choice);
  add(dropped_by_position_bucket, other.dropped_by_position_bucket);
  add(routed_by_position_bucket, other.routed_by_position_bucket);
  tokens += other.tokens;
  tokens_fully_dropped += other.tokens_fully_dropped;
  entropy_sum += other.entropy_sum;
}

// Token t sits at position t % seq_len, in bucket position * buckets / seq_len.
RoutingStats ComputeRoutingStats(const Routing& r, int64_t seq_len, int64_t buckets) {
  OPENMOE_CHECK(seq_len > 0 && buckets > 0);
  RoutingStats s;
  s.routed_per_expert.assign(r.num_experts, 0);
  s.kept_per_expert.assign(r.num_experts, 0);
  s.dropped_by_choice.assign(r.top_k, 0);
  s.dropped_by_position_bucket.assign(buckets, 0);
  s.routed_by_position_bucket.assign(buckets, 0);
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    if (!r.IsRouted(t)) continue;
    ++s.tokens;
    const int64_t bucket = (t % seq_len) * buckets / seq_len;
    int64_t dropped = 0, kept = 0;
    for (int64_t j = 0; j < r.top_k; ++j) {
      const int64_t a = t * r.top_k + j;
      const bool taken = r.choice_slot[a] >= 0;
      kept += taken ? 1 : 0;
      if (r.experts_choose) {  // an expert's load is what it took; nothing is dropped by choice
        if (taken) {
          ++s.routed_per_expert[r.choice_expert[a]];
          ++s.kept_per_expert[r.choice_expert[a]];
        }
        continue;
      }
      ++s.routed_per_expert[r.choice_expert[a]];
      ++s.routed_by_position_bucket[bucket];
      if (taken) {
        ++s.kept_per_expert[r.choice_expert[a]];
      } else {
        ++s.dropped_by_choice[j];
        ++s.dropped_by_position_bucket[bucket];
        ++dropped;
      }
    }
    if (r.experts_choose) {  // by position: tokens, and those no expert took
      ++s.routed_by_position_bucket[bucket];
      if (kept == 0) ++s.dropped_by_position_bucket[bucket];
    }
    if (kept == 0) ++s.tokens_fully_dropped;
    // Entropy of the token's distribution over experts (sigmoid scores normalised to sum 1).
    const float* p = r.probs.data() + t * r.num_experts;
    double norm = 1.0;
    if (r.score_function == SIGMOID) {
      norm = 0;
      for (int64_t e = 0; e < r.num_experts; ++e) norm += p[e];
    }
    for (int64_t e = 0; e < r.num_experts; ++e) {
      const double q = p[e] / norm;
      if (q > 0) s.entropy_sum -= q * std::log(q);
    }
  }
  return s;
}

}  // namespace openmoe
