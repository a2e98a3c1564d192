// The router's losses and backward (model/router.h): the load-balance loss over its units, the
// router z-loss, and the gradient of both and of the combine weights through the scores.
#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/kernels.h"
#include "model/router.h"

namespace openmoe {
namespace {

// The scores the load-balance loss averages: softmax probabilities as they are; sigmoid scores
// normalised to sum 1 over the token's experts.
void BalanceScores(const Routing& r, int64_t t, double* q) {
  const float* s = r.probs.data() + t * r.num_experts;
  if (r.score_function == SOFTMAX) {
    for (int64_t e = 0; e < r.num_experts; ++e) q[e] = s[e];
    return;
  }
  double sum = 0;
  for (int64_t e = 0; e < r.num_experts; ++e) sum += s[e];
  for (int64_t e = 0; e < r.num_experts; ++e) q[e] = s[e] / sum;
}

// Calls f(first, end, counts) for each load-balance unit: its tokens [first, end) and its choice
// counts (E): the unit's own, or under GLOBAL_BATCH the whole batch's.
template <typename F>
void ForEachBalanceUnit(const Routing& r, F&& f) {
  if (r.balance_unit <= 0 || r.num_tokens == 0) return;
  if (r.balance_scope == GLOBAL_BATCH) {
    f(int64_t{0}, r.num_tokens, r.balance_counts);
    return;
  }
  std::vector<double> counts(r.num_experts);
  for (int64_t first = 0; first < r.num_tokens; first += r.balance_unit) {
    std::fill(counts.begin(), counts.end(), 0.0);
    for (int64_t t = first; t < first + r.balance_unit; ++t) {
      if (!r.IsRouted(t)) continue;
      for (int64_t j = 0; j < r.top_k; ++j) counts[r.choice_expert[t * r.top_k + j]] += 1.0;
    }
    f(first, first + r.balance_unit, counts);
  }
}

// dlogits_row (E) += p * (dp - <p, dp>): the softmax backward of one row.
void SoftmaxRowBackward(const float* p, const double* dp, int64_t n, float* dlogits_row) {
  double dot = 0.0;
  for (int64_t e = 0; e < n; ++e) dot += p[e] * dp[e];
  for (int64_t e = 0; e < n; ++e) dlogits_row[e] += static_cast<float>(p[e] * (dp[e] - dot));
}

// dlogits_row += the gradient through token t's scores of ds (E), d loss / d scores.
void ScoreRowBackward(const Routing& r, int64_t t, const double* ds, float* dlogits_row) {
  const float* s = r.probs.data() + t * r.num_experts;
  if (r.score_function == SOFTMAX) {
    SoftmaxRowBackward(s, ds, r.num_experts, dlogits_row);
    return;
  }
  for (int64_t e = 0; e < r.num_experts; ++e)
    dlogits_row[e] += static_cast<float>(ds[e] * s[e] * (1.0 - s[e]));
}

// dq (E), d loss / d BalanceScores, becomes d loss / d scores in place.
void BalanceScoresBackward(const Routing& r, int64_t t, double* dq) {
  if (r.score_function == SOFTMAX) return;
  const float* s = r.probs.data() + t * r.num_experts;
  double sum = 0, dot = 0;
  for (int64_t e = 0; e < r.num_experts; ++e) sum += s[e];
  for (int64_t e = 0; e < r.num_experts; ++e) dot += dq[e] * (s[e] / sum);
  for (int64_t e = 0; e < r.num_experts; ++e) dq[e] = (dq[e] - dot) / sum;
}

}  // namespace

RouterLossSums ComputeRouterLossSums(const Routing& r) {
  const int64_t num_experts = r.num_experts;
  RouterLossSums sums;
  if (r.from_table) return sums;
  // Unit loss E * sum_e (n_e / U) * (S_e / U), weighted U / group_size (1 for groups).
  const double unit = static_cast<double>(r.balance_unit);
  const double weight = unit / static_cast<double>(r.group_size);
  std::vector<double> score_sum(num_experts), q(num_experts);
  ForEachBalanceUnit(r, [&](int64_t first, int64_t end, const std::vector<double>& counts) {
    std::fill(score_sum.begin(), score_sum.end(), 0.0);
    for (int64_t t = first; t < end; ++t) {
      if (!r.IsRouted(t)) continue;
      BalanceScores(r, t, q.data());
      for (int64_t e = 0; e < num_experts; ++e) score_sum[e] += q[e];
    }
    double unit_loss = 0.0;
    for (int64_t e = 0; e < num_experts; ++e) {
      unit_loss += (counts[e] / unit) * (score_sum[e] / unit);
    }
    sums.load_balance += num_experts * unit_loss * weight;
  });
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    if (r.IsRouted(t)) sums.z_loss += static_cast<double>(r.lse[t]) * r.lse[t];
  }
  return sums;
}

void RouterBackward(const Routing& r, const float* dgates, double load_balance_scale,
                    double z_scale, float* dlogits) {
  const int64_t num_experts = r.num_experts;
  OPENMOE_CHECK_MSG(!r.from_table, "token-id routing has no router to differentiate");
  std::vector<double> ds(num_experts);

  // The combine weights: Gate(t, e) = s[t, e] (/ gate_norm[t], the sum of t's top_k scores).
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    const float* dg = dgates + t * num_experts;
    for (int64_t e = 0; e < num_experts; ++e) ds[e] = dg[e];
    if (!r.gate_norm.empty() && r.IsRouted(t)) {
      // d (s_i / Z) / d s_c = (delta_ic - g_i) / Z for each of the top_k choices c.
      const double z = r.gate_norm[t];
      double dot = 0;
      for (int64_t j = 0; j < r.top_k; ++j) {
        const int32_t e = r.choice_expert[t * r.top_k + j];
        dot += dg[e] * static_cast<double>(r.Gate(t, e));
      }
      for (int64_t j = 0; j < r.top_k; ++j) {
        const int32_t e = r.choice_expert[t * r.top_k + j];
        ds[e] = (dg[e] - dot) / z;
      }
    }
    ScoreRowBackward(r, t, ds.data(), dlogits + t * num_experts);
  }

  // Load balance: d unit loss / d q[t, e] = E * n_e / (group_size * U), n_e constant. An unrouted
  // token's scores are masked out of the sums, so it gets no gradient.
  ForEachBalanceUnit(r, [&](int64_t first, int64_t end, const std::vector<double>& counts) {
    const double scale = load_balance_scale * num_experts /
                         (static_cast<double>(r.group_size) * r.balance_unit);
    std::vector<double> dq(num_experts);
    for (int64_t t = first; t < end; ++t) {
      if (!r.IsRouted(t)) continue;
      for (int64_t e = 0; e < num_experts; ++e) dq[e] = counts[e] * scale;
      BalanceScoresBackward(r, t, dq.data());
      ScoreRowBackward(r, t, dq.data(), dlogits + t * num_experts);
    }
  });

  // z-loss: d lse^2 / d logits = 2 * lse * softmax(logits).
  std::vector<float> softmax(r.score_function == SOFTMAX ? 0 : num_experts);
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    if (!r.IsRouted(t)) continue;
    const float c = static_cast<float>(2.0 * z_scale * r.lse[t]);
    const float* p = r.probs.data() + t * num_experts;
    if (r.score_function != SOFTMAX) {
      for (int64_t e = 0; e < num_experts; ++e)
        softmax[e] = std::exp(r.logits[t * num_experts + e] - r.lse[t]);
      p = softmax.data();
    }
    Axpy(c, p, dlogits + t * num_experts, num_experts);
  }
}

}  // namespace openmoe
