#include "model/token_id_routing.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace openmoe {

TokenIdTables::TokenIdTables(std::vector<int64_t> moe_layers, int64_t vocab, int64_t num_experts,
                             int64_t top_k)
    : moe_layers_(std::move(moe_layers)), vocab_(vocab), num_experts_(num_experts), top_k_(top_k) {
  OPENMOE_CHECK(vocab_ > 0 && num_experts_ > 0 && top_k_ >= 1 && top_k_ <= num_experts_);
  const size_t n = moe_layers_.size() * static_cast<size_t>(vocab_ * Width());
  stats_.assign(n, 0);
  pending_.assign(n, 0);
}

int64_t TokenIdTables::Slot(int64_t layer) const {
  for (size_t i = 0; i < moe_layers_.size(); ++i)
    if (moe_layers_[i] == layer) return static_cast<int64_t>(i);
  OPENMOE_CHECK_MSG(false, "layer %ld is not an MoE layer of the token-id tables",
                    static_cast<long>(layer));
  return -1;
}

std::vector<int64_t> TokenIdTables::StatsShape() const {
  return {static_cast<int64_t>(moe_layers_.size()), vocab_, Width()};
}

std::vector<int64_t> TokenIdTables::EncodedShape() const {
  return {static_cast<int64_t>(moe_layers_.size()), vocab_, Width(), 2};
}

void TokenIdTables::Encode(float* out) const {
  for (size_t i = 0; i < stats_.size(); ++i) {
    const float hi = static_cast<float>(stats_[i]);
    out[2 * i] = hi;
    out[2 * i + 1] = static_cast<float>(stats_[i] - static_cast<int64_t>(hi));
  }
}

void TokenIdTables::Decode(const float* in) {
  for (size_t i = 0; i < stats_.size(); ++i) {
    stats_[i] = static_cast<int64_t>(in[2 * i]) + static_cast<int64_t>(in[2 * i + 1]);
  }
}

void TokenIdTables::Count(int64_t layer, const Routing& r, const int32_t* token_ids) {
  OPENMOE_CHECK(!r.from_table && r.num_experts == num_experts_ && r.top_k == top_k_);
  int64_t* base = pending_.data() + Slot(layer) * vocab_ * Width();
  const int64_t e_count = num_experts_;
  for (int64_t t = 0; t < r.num_tokens; ++t) {
    if (!r.IsRouted(t)) continue;
    const int32_t id = token_ids[t];
    OPENMOE_CHECK(id >= 0 && id < vocab_);
    int64_t* row = base + id * Width();
    row[0] += 1;
    for (int64_t j = 0; j < top_k_; ++j) row[1 + r.choice_expert[t * top_k_ + j]] += 1;
    const float* p = r.probs.data() + t * e_count;
    for (int64_t e = 0; e < e_count; ++e) row[1 + e_count + e] += std::llround(p[e] / kProbUnit);
  }
}

void TokenIdTables::MergePending() {
  for (size_t i = 0; i < stats_.size(); ++i) stats_[i] += pending_[i];
  std::fill(pending_.begin(), pending_.end(), 0);
}

void TokenIdTables::Reset() {
  std::fill(pending_.begin(), pending_.end(), 0);
  built_ = false;
  experts_.clear();
  gates_.clear();
}

void TokenIdTables::Build() {
  const int64_t layers = static_cast<int64_t>(moe_layers_.size()), e_count = num_experts_;
  experts_.assign(layers * vocab_ * top_k_, -1);
  gates_.assign(layers * vocab_ * e_count, 0.0f);
  std::vector<char> taken(e_count);
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t id = 0; id < vocab_; ++id) {
      const int64_t* row = stats_.data() + (l * vocab_ + id) * Width();
      int32_t* experts = experts_.data() + (l * vocab_ + id) * top_k_;
      float* gates = gates_.data() + (l * vocab_ + id) * e_count;
      if (row[0] <= 0) {  // never seen
        for (int64_t j = 0; j < top_k_; ++j) experts[j] = static_cast<int32_t>((id + j) % e_count);
        std::fill_n(gates, e_count, 1.0f / static_cast<float>(e_count));
        continue;
      }
      std::fill(taken.begin(), taken.end(), 0);
      for (int64_t j = 0; j < top_k_; ++j) {
        int32_t best = -1;
        for (int64_t e = 0; e < e_count; ++e) {
          if (!taken[e] && (best < 0 || row[1 + e] > row[1 + best])) best = static_cast<int32_t>(e);
        }
        taken[best] = 1;
        experts[j] = best;
      }
      for (int64_t e = 0; e < e_count; ++e) {
        gates[e] = static_cast<float>(static_cast<double>(row[1 + e_count + e]) * kProbUnit /
                                      static_cast<double>(row[0]));
      }
    }
  }
  built_ = true;
}

const int32_t* TokenIdTables::Experts(int64_t layer, int32_t id) const {
  OPENMOE_CHECK(built_ && id >= 0 && id < vocab_);
  return experts_.data() + (Slot(layer) * vocab_ + id) * top_k_;
}

const float* TokenIdTables::Gates(int64_t layer, int32_t id) const {
  OPENMOE_CHECK(built_ && id >= 0 && id < vocab_);
  return gates_.data() + (Slot(layer) * vocab_ + id) * num_experts_;
}

void RouteByTokenId(const RoutingConfig& config, const TokenIdTables& tables, int64_t layer,
                    const int32_t* token_ids, const int32_t* segment_ids, int64_t num_tokens,
                    Routing* routing) {
  const int64_t num_experts = config.num_experts, top_k = config.top_k;
  OPENMOE_CHECK(num_experts == tables.num_experts() && top_k == tables.top_k());
  OPENMOE_CHECK_MSG(num_tokens == 0 || token_ids != nullptr, "token-id routing needs the ids");
  StartRouting(config, num_tokens, segment_ids, /*from_table=*/true, routing);
  Routing& r = *routing;
  r.logits.Resize({0});
  r.lse.Resize({0});
  r.probs.ResizeUninitialized({num_tokens, num_experts});
  r.choice_expert.assign(num_tokens * top_k, -1);
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::copy_n(tables.Gates(layer, token_ids[t]), num_experts, r.probs.data() + t * num_experts);
    if (config.ignore_padding_tokens && segment_ids[t] == 0) continue;
    std::copy_n(tables.Experts(layer, token_ids[t]), top_k, r.choice_expert.begin() + t * top_k);
  }
  AssignSlots(config, &r);
}

}  // namespace openmoe
