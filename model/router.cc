#include "model/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/check.h"
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

// choice_expert (T, k): the k most probable experts of each token, by descending probability, ties
// to the lower expert id.
void SelectTopK(const float* probs, int64_t num_tokens, int64_t num_experts, int64_t top_k,
                std::vector<int32_t>* choice_expert) {
  choice_expert->assign(num_tokens * top_k, -1);
  std::vector<char> taken(num_experts);
  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* p = probs + t * num_experts;
    std::fill(taken.begin(), taken.end(), 0);
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

}  // namespace

void ComputeRouting(const RoutingConfig& config, const float* x, const float* w_router,
                    int64_t num_tokens, int64_t d_model, Routing* routing,
                    const int32_t* segment_ids) {
  const int64_t num_experts = config.num_experts, top_k = config.top_k;
  StartRouting(config, num_tokens, segment_ids, /*from_table=*/false, routing);
  Routing& r = *routing;

  r.logits.ResizeUninitialized({num_tokens, num_experts});
  r.probs.ResizeUninitialized({num_tokens, num_experts});
  r.lse.ResizeUninitialized({num_tokens});
  if (num_tokens > 0) {
    Gemm({}, num_tokens, num_experts, d_model, x, w_router, r.logits.data());
    SoftmaxRows(r.logits.data(), num_tokens, num_experts, r.probs.data(), r.lse.data());
  }
  SelectTopK(r.probs.data(), num_tokens, num_experts, top_k, &r.choice_expert);
  if (config.ignore_padding_tokens) {
    for (int64_t t = 0; t < num_tokens; ++t) {
      if (segment_ids[t] != 0) continue;
      std::fill_n(r.choice_expert.begin() + t * top_k, top_k, -1);
    }
  }
  AssignSlots(config, &r);
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
  r->num_tokens = num_tokens;
  r->num_experts = config.num_experts;
  r->top_k = config.top_k;
  r->group_size = config.group_size;
  r->capacity = ExpertCapacity(config);
  r->from_table = from_table;
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
  std::vector<int64_t> kept_per_expert(num_experts, 0);
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
        ++kept_per_expert[e];
      }
    }
  }

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
    r.kept_gate[i] = r.probs[t * num_experts + e];
  }
}

RouterLossSums ComputeRouterLossSums(const Routing& r) {
  const int64_t num_experts = r.num_experts, group_size = r.group_size;
  RouterLossSums sums;
  if (r.from_table) return sums;
  std::vector<double> routed(num_experts), prob_sum(num_experts);
  for (int64_t g = 0; g < r.NumGroups(); ++g) {
    std::fill(routed.begin(), routed.end(), 0.0);
    std::fill(prob_sum.begin(), prob_sum.end(), 0.0);
    for (int64_t t = g * group_size; t < (g + 1) * group_size; ++t) {
      if (!r.IsRouted(t)) continue;
      for (int64_t j = 0; j < r.top_k; ++j) routed[r.choice_expert[t * r.top_k + j]] += 1.0;
      for (int64_t e = 0; e < num_experts; ++e) prob_sum[e] += r.probs[t * num_experts + e];
    }
    double group_loss = 0.0;
    for (int64_t e = 0; e < num_experts; ++e) {
      group_loss += (routed[e] / group_size) * (prob_sum[e] / group_size);
    }
    sums.load_balance += num_experts * group_loss;
  }
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    if (r.IsRouted(t)) sums.z_loss += static_cast<double>(r.lse[t]) * r.lse[t];
  }
  return sums;
}

namespace {

// dlogits_row (E) += p * (dp - <p, dp>): the softmax backward of one row.
void SoftmaxRowBackward(const float* p, const double* dp, int64_t n, float* dlogits_row) {
  double dot = 0.0;
  for (int64_t e = 0; e < n; ++e) dot += p[e] * dp[e];
  for (int64_t e = 0; e < n; ++e) dlogits_row[e] += static_cast<float>(p[e] * (dp[e] - dot));
}

}  // namespace

void RouterLossBackward(const Routing& r, double load_balance_scale, double z_scale,
                        float* dlogits) {
  const int64_t num_experts = r.num_experts, group_size = r.group_size;
  OPENMOE_CHECK_MSG(!r.from_table, "token-id routing has no router losses to differentiate");
  // Group loss E * sum_e f_e * mean_t p[t, e]: d / d p[t, e] = E * f_e / G (f_e constant). An
  // unrouted token's p is masked out of the mean, so it gets no gradient.
  std::vector<double> dp(num_experts);
  for (int64_t g = 0; g < r.NumGroups(); ++g) {
    std::fill(dp.begin(), dp.end(), 0.0);
    for (int64_t t = g * group_size; t < (g + 1) * group_size; ++t) {
      if (!r.IsRouted(t)) continue;
      for (int64_t j = 0; j < r.top_k; ++j) dp[r.choice_expert[t * r.top_k + j]] += 1.0;
    }
    const double scale =
        load_balance_scale * num_experts / (static_cast<double>(group_size) * group_size);
    for (double& v : dp) v *= scale;
    for (int64_t t = g * group_size; t < (g + 1) * group_size; ++t) {
      if (!r.IsRouted(t)) continue;
      SoftmaxRowBackward(r.probs.data() + t * num_experts, dp.data(), num_experts,
                         dlogits + t * num_experts);
    }
  }
  // z-loss: d lse^2 / d logits = 2 * lse * p.
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    if (!r.IsRouted(t)) continue;
    const float c = static_cast<float>(2.0 * z_scale * r.lse[t]);
    Axpy(c, r.probs.data() + t * num_experts, dlogits + t * num_experts, num_experts);
  }
}

void RouterSoftmaxBackward(const Routing& r, const float* dprobs, float* dlogits) {
  const int64_t num_experts = r.num_experts;
  std::vector<double> dp(num_experts);
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    for (int64_t e = 0; e < num_experts; ++e) dp[e] = dprobs[t * num_experts + e];
    SoftmaxRowBackward(r.probs.data() + t * num_experts, dp.data(), num_experts,
                       dlogits + t * num_experts);
  }
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
    int64_t dropped = 0;
    for (int64_t j = 0; j < r.top_k; ++j) {
      const int64_t a = t * r.top_k + j;
      ++s.routed_per_expert[r.choice_expert[a]];
      ++s.routed_by_position_bucket[bucket];
      if (r.choice_slot[a] >= 0) {
        ++s.kept_per_expert[r.choice_expert[a]];
      } else {
        ++s.dropped_by_choice[j];
        ++s.dropped_by_position_bucket[bucket];
        ++dropped;
      }
    }
    if (dropped == r.top_k) ++s.tokens_fully_dropped;
    for (int64_t e = 0; e < r.num_experts; ++e) {
      const double p = r.probs[t * r.num_experts + e];
      if (p > 0) s.entropy_sum -= p * std::log(p);
    }
  }
  return s;
}

}  // namespace openmoe
