#include "model/routing_stats.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/check.h"
#include "core/rng.h"

namespace openmoe {
namespace {

// id -> (E) top-1 counts, ascending by id.
std::map<int32_t, std::vector<int64_t>> CountsById(const std::vector<int32_t>& ids,
                                                   const std::vector<int32_t>& top1,
                                                   int64_t num_experts) {
  OPENMOE_CHECK(ids.size() == top1.size());
  std::map<int32_t, std::vector<int64_t>> counts;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::vector<int64_t>& c = counts[ids[i]];
    if (c.empty()) c.assign(num_experts, 0);
    OPENMOE_CHECK(top1[i] >= 0 && top1[i] < num_experts);
    ++c[top1[i]];
  }
  return counts;
}

int64_t Sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

}  // namespace

void RoutedTokens::Add(int32_t token_id, int32_t source_index, int32_t pos, const int32_t* experts,
                       const int32_t* slots) {
  token.push_back(token_id);
  source.push_back(source_index);
  position.push_back(pos);
  for (int64_t j = 0; j < top_k; ++j) {
    expert.push_back(experts[j]);
    dropped.push_back(slots[j] < 0 ? 1 : 0);
  }
}

std::vector<int32_t> RoutedTokens::Top1() const {
  std::vector<int32_t> out(token.size());
  for (size_t i = 0; i < token.size(); ++i) out[i] = expert[i * top_k];
  return out;
}

RoutedTokens RoutedTokens::OfSource(int32_t source_index) const {
  RoutedTokens out;
  out.num_experts = num_experts;
  out.top_k = top_k;
  for (size_t i = 0; i < token.size(); ++i) {
    if (source[i] != source_index) continue;
    out.token.push_back(token[i]);
    out.source.push_back(source[i]);
    out.position.push_back(position[i]);
    for (int64_t j = 0; j < top_k; ++j) {
      out.expert.push_back(expert[i * top_k + j]);
      out.dropped.push_back(dropped[i * top_k + j]);
    }
  }
  return out;
}

Specialization TokenSpecialization(const std::vector<int32_t>& ids,
                                   const std::vector<int32_t>& top1, int64_t num_experts,
                                   int64_t min_count) {
  Specialization s;
  int64_t max_sum = 0;
  for (const auto& [id, c] : CountsById(ids, top1, num_experts)) {
    const int64_t n = Sum(c);
    if (n < min_count) continue;
    ++s.ids;
    s.occurrences += n;
    max_sum += *std::max_element(c.begin(), c.end());
  }
  s.value = s.occurrences > 0 ? static_cast<double>(max_sum) / s.occurrences : 0.0;
  return s;
}

Specialization SpecializationControl(const std::vector<int32_t>& ids,
                                     const std::vector<int32_t>& top1, int64_t num_experts,
                                     int64_t min_count, int64_t draws, uint64_t seed) {
  OPENMOE_CHECK(draws >= 1);
  const std::vector<double> share = ExpertShare(top1, num_experts);
  std::vector<double> cdf(share.size());
  double acc = 0;
  for (size_t e = 0; e < share.size(); ++e) cdf[e] = acc += share[e];
  const CounterRng rng(seed, StreamId("specialization_control"));
  Specialization s;
  double max_sum = 0;
  uint64_t counter = 0;
  std::vector<int64_t> drawn(num_experts);
  for (const auto& [id, c] : CountsById(ids, top1, num_experts)) {
    const int64_t n = Sum(c);
    if (n < min_count) continue;
    ++s.ids;
    s.occurrences += n;
    for (int64_t d = 0; d < draws; ++d) {
      std::fill(drawn.begin(), drawn.end(), 0);
      for (int64_t i = 0; i < n; ++i) {
        const double u = rng.Uniform(counter++) * acc;
        // The first expert whose cumulative share exceeds u (experts with share 0 never win).
        const int64_t e = std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin();
        ++drawn[std::min<int64_t>(e, num_experts - 1)];
      }
      max_sum += static_cast<double>(*std::max_element(drawn.begin(), drawn.end())) / draws;
    }
  }
  s.value = s.occurrences > 0 ? max_sum / s.occurrences : 0.0;
  return s;
}

std::vector<double> ExpertShare(const std::vector<int32_t>& top1, int64_t num_experts) {
  std::vector<double> share(num_experts, 0.0);
  for (int32_t e : top1) {
    OPENMOE_CHECK(e >= 0 && e < num_experts);
    share[e] += 1.0;
  }
  for (double& x : share) x = top1.empty() ? 0.0 : x / static_cast<double>(top1.size());
  return share;
}

double JensenShannon(const std::vector<double>& p, const std::vector<double>& q) {
  OPENMOE_CHECK(p.size() == q.size());
  double js = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double m = 0.5 * (p[i] + q[i]);
    if (p[i] > 0) js += 0.5 * p[i] * std::log2(p[i] / m);
    if (q[i] > 0) js += 0.5 * q[i] * std::log2(q[i] / m);
  }
  return std::clamp(js, 0.0, 1.0);
}

std::vector<TableEntry> TokenExpertTable(const std::vector<int32_t>& ids,
                                         const std::vector<int32_t>& top1, int64_t num_experts,
                                         int64_t min_count) {
  std::vector<TableEntry> table;
  for (const auto& [id, c] : CountsById(ids, top1, num_experts)) {
    const int64_t n = Sum(c);
    if (n < min_count) continue;
    // max_element returns the first maximum: ties go to the lower expert.
    const int32_t e = static_cast<int32_t>(std::max_element(c.begin(), c.end()) - c.begin());
    table.push_back({id, e, n});
  }
  return table;
}

double Top1Agreement(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  OPENMOE_CHECK(a.size() == b.size());
  if (a.empty()) return 0.0;
  int64_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i] ? 1 : 0;
  return static_cast<double>(same) / static_cast<double>(a.size());
}

double TableAgreement(const std::vector<TableEntry>& a, const std::vector<TableEntry>& b) {
  std::map<int32_t, int32_t> a_expert;
  for (const TableEntry& t : a) a_expert[t.id] = t.expert;
  int64_t total = 0, same = 0;
  for (const TableEntry& t : b) {
    total += t.count;
    const auto it = a_expert.find(t.id);
    if (it != a_expert.end() && it->second == t.expert) same += t.count;
  }
  return total > 0 ? static_cast<double>(same) / static_cast<double>(total) : 0.0;
}

std::vector<std::vector<TopToken>> TopTokensPerExpert(const std::vector<int32_t>& ids,
                                                      const std::vector<int32_t>& top1,
                                                      int64_t num_experts, int64_t min_count,
                                                      int64_t per_expert) {
  std::vector<std::vector<TopToken>> out(num_experts);
  for (const auto& [id, c] : CountsById(ids, top1, num_experts)) {
    const int64_t n = Sum(c);
    if (n < min_count) continue;
    for (int64_t e = 0; e < num_experts; ++e) {
      if (c[e] > 0) out[e].push_back({id, c[e], static_cast<double>(c[e]) / n});
    }
  }
  for (std::vector<TopToken>& list : out) {
    // Ids arrive ascending, so a stable sort by count keeps ties at the lower id.
    std::stable_sort(list.begin(), list.end(),
                     [](const TopToken& x, const TopToken& y) { return x.count > y.count; });
    if (static_cast<int64_t>(list.size()) > per_expert) list.resize(per_expert);
  }
  return out;
}

DropByPosition DropFractionByPosition(const RoutedTokens& routed, int64_t seq_len,
                                      int64_t buckets) {
  OPENMOE_CHECK(seq_len >= 1 && buckets >= 1);
  DropByPosition d;
  d.tokens.assign(buckets, 0);
  std::vector<std::vector<int64_t>> dropped(routed.top_k, std::vector<int64_t>(buckets, 0));
  for (int64_t i = 0; i < routed.size(); ++i) {
    const int64_t b = std::min<int64_t>(buckets - 1, routed.position[i] * buckets / seq_len);
    ++d.tokens[b];
    for (int64_t j = 0; j < routed.top_k; ++j) dropped[j][b] += routed.dropped[i * routed.top_k + j];
  }
  d.by_choice.assign(routed.top_k, std::vector<double>(buckets, 0.0));
  for (int64_t j = 0; j < routed.top_k; ++j) {
    for (int64_t b = 0; b < buckets; ++b) {
      d.by_choice[j][b] = d.tokens[b] > 0 ? static_cast<double>(dropped[j][b]) / d.tokens[b] : 0.0;
    }
  }
  return d;
}

}  // namespace openmoe
