// The routers after OpenMoE's (model/router.h): selection and loss values against naive loops
// written here, and the bias balancing update against its closed form. Gradients: moe_test.cc.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "model/expert_bias.h"
#include "model/router.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

constexpr int64_t kTokens = 32, kExperts = 8;

std::vector<float> RandomLogits(uint64_t seed) {
  std::vector<float> logits(kTokens * kExperts);
  testing::FillNormal(logits.data(), logits.size(), 1.5, seed);
  return logits;
}

RoutingConfig BaseConfig() {
  return {.num_experts = kExperts, .top_k = 2, .group_size = 16, .capacity_factor = 1.0,
          .min_capacity = 1};
}

Routing Route(const RoutingConfig& config, const std::vector<float>& logits,
              const float* bias = nullptr, int64_t seq_len = 0) {
  std::vector<float> identity(kExperts * kExperts, 0.0f);
  for (int64_t i = 0; i < kExperts; ++i) identity[i * kExperts + i] = 1.0f;
  Routing r;
  ComputeRouting(config, logits.data(), identity.data(), kTokens, kExperts, &r, nullptr, bias,
                 seq_len);
  return r;
}

TEST(ExpertsChooseTest, EachExpertTakesItsTopCapacityTokensOfEachGroup) {
  RoutingConfig config = BaseConfig();
  config.selection = EXPERTS_CHOOSE;
  config.capacity_factor = 2.0;  // C = 2 * 16 / 8 = 4
  const Routing r = Route(config, RandomLogits(3));
  ASSERT_EQ(r.capacity, 4);
  ASSERT_EQ(r.top_k, kExperts);
  for (int64_t e = 0; e < kExperts; ++e) {
    std::vector<int64_t> want;
    for (int64_t g = 0; g < 2; ++g) {
      std::vector<int64_t> tokens(16);
      std::iota(tokens.begin(), tokens.end(), g * 16);
      std::stable_sort(tokens.begin(), tokens.end(), [&](int64_t a, int64_t b) {
        return r.probs[a * kExperts + e] > r.probs[b * kExperts + e];
      });
      want.insert(want.end(), tokens.begin(), tokens.begin() + 4);
    }
    const std::vector<int64_t> got(r.kept_token.begin() + r.expert_offsets[e],
                                   r.kept_token.begin() + r.expert_offsets[e + 1]);
    EXPECT_EQ(got, want) << "expert " << e;
    for (int64_t i = r.expert_offsets[e]; i < r.expert_offsets[e + 1]; ++i)
      EXPECT_EQ(r.kept_gate[i], r.probs[r.kept_token[i] * kExperts + e]);
  }
  // No load-balance loss; the z-loss stays.
  const RouterLossSums sums = ComputeRouterLossSums(r);
  EXPECT_EQ(sums.load_balance, 0.0);
  EXPECT_GT(sums.z_loss, 0.0);
  // Stats: an expert's load is what it took; tokens no expert took are the drops.
  const RoutingStats st = ComputeRoutingStats(r, 16, 2);
  int64_t none = 0;
  for (int64_t t = 0; t < kTokens; ++t) {
    bool taken = false;
    for (int64_t i = 0; i < r.NumKept(); ++i) taken = taken || r.kept_token[i] == t;
    none += taken ? 0 : 1;
  }
  EXPECT_EQ(st.tokens_fully_dropped, none);
  for (int64_t e = 0; e < kExperts; ++e) EXPECT_EQ(st.routed_per_expert[e], 8);
}

TEST(SigmoidRouterTest, ScoresAreSigmoidsAndTopKByScore) {
  RoutingConfig config = BaseConfig();
  config.score_function = SIGMOID;
  const std::vector<float> logits = RandomLogits(4);
  const Routing r = Route(config, logits);
  for (int64_t i = 0; i < kTokens * kExperts; ++i)
    EXPECT_NEAR(r.probs[i], 1.0 / (1.0 + std::exp(-logits[i])), 1e-6);
  for (int64_t t = 0; t < kTokens; ++t) {
    const float* l = logits.data() + t * kExperts;
    const int64_t best = std::max_element(l, l + kExperts) - l;
    EXPECT_EQ(r.choice_expert[t * 2], best);
  }
}

// Group-limited routing: a naive loop picks each token's best group by the sum of its top
// top_k / groups_per_token scores, then the token's top_k inside the kept groups.
TEST(GroupLimitedRoutingTest, TokensStayInTheirBestGroups) {
  RoutingConfig config = BaseConfig();
  config.num_expert_groups = 4;  // 2 experts each
  config.groups_per_token = 2;   // top 1 score per group decides
  config.top_k = 3;
  const Routing r = Route(config, RandomLogits(5));
  for (int64_t t = 0; t < kTokens; ++t) {
    const float* p = r.probs.data() + t * kExperts;
    std::vector<std::pair<float, int>> groups;
    for (int g = 0; g < 4; ++g) groups.push_back({std::max(p[2 * g], p[2 * g + 1]), g});
    std::stable_sort(groups.begin(), groups.end(),
                     [](auto a, auto b) { return a.first > b.first; });
    std::vector<int> allowed;
    for (int m = 0; m < 2; ++m) {
      allowed.push_back(2 * groups[m].second);
      allowed.push_back(2 * groups[m].second + 1);
    }
    std::stable_sort(allowed.begin(), allowed.end(), [p](int a, int b) { return p[a] > p[b]; });
    for (int j = 0; j < 3; ++j) EXPECT_EQ(r.choice_expert[t * 3 + j], allowed[j]) << "token " << t;
  }
}

TEST(SelectionBiasTest, BiasChoosesButDoesNotWeigh) {
  RoutingConfig config = BaseConfig();
  config.capacity_factor = 4.0;
  std::vector<float> bias(kExperts, 0.0f);
  bias[5] = 10.0f;  // every token's first choice
  const Routing r = Route(config, RandomLogits(6), bias.data());
  for (int64_t t = 0; t < kTokens; ++t) EXPECT_EQ(r.choice_expert[t * 2], 5);
  for (int64_t i = 0; i < r.NumKept(); ++i) {
    const int64_t t = r.kept_token[i];
    const int32_t e = r.choice_expert[t * 2 + r.kept_choice[i]];
    EXPECT_EQ(r.kept_gate[i], r.probs[t * kExperts + e]);
  }
}

// The load-balance loss over units of U tokens, by a naive loop: E * sum_e f_e P_e per unit,
// weighted U / group_size; counts and means over the unit (or the whole batch).
double NaiveBalance(const Routing& r, int64_t unit) {
  double total = 0;
  for (int64_t first = 0; first < r.num_tokens; first += unit) {
    double loss = 0;
    for (int64_t e = 0; e < kExperts; ++e) {
      double f = 0, p = 0;
      for (int64_t t = first; t < first + unit; ++t) {
        for (int64_t j = 0; j < r.top_k; ++j) f += r.choice_expert[t * r.top_k + j] == e;
        double norm = 0;
        for (int64_t i = 0; i < kExperts; ++i) norm += r.probs[t * kExperts + i];
        p += r.probs[t * kExperts + e] / (r.score_function == SIGMOID ? norm : 1.0);
      }
      loss += (f / unit) * (p / unit);
    }
    total += kExperts * loss * unit / static_cast<double>(r.group_size);
  }
  return total;
}

TEST(LoadBalanceScopeTest, GroupSequenceAndGlobalAgainstNaiveLoops) {
  for (ScoreFunction f : {SOFTMAX, SIGMOID}) {
    RoutingConfig config = BaseConfig();
    config.score_function = f;
    const std::vector<float> logits = RandomLogits(7);
    const std::pair<LoadBalanceScope, int64_t> scopes[] = {
        {GROUP, 16}, {SEQUENCE, 8}, {GLOBAL_BATCH, kTokens}};
    for (const auto& [scope, unit] : scopes) {
      config.load_balance_scope = scope;
      const Routing r = Route(config, logits, nullptr, /*seq_len=*/8);
      EXPECT_NEAR(ComputeRouterLossSums(r).load_balance, NaiveBalance(r, unit), 1e-9)
          << LoadBalanceScope_Name(scope) << " " << ScoreFunction_Name(f);
    }
  }
}

TEST(ExpertBiasTest, MovesEachBiasTowardsTheMeanLoad) {
  ExpertBias bias(/*layers=*/3, /*num_experts=*/4, /*rate=*/0.25);
  std::vector<RoutingStats> routing(3);
  routing[1].routed_per_expert = {10, 2, 4, 4};  // mean 5
  bias.Update(routing);
  bias.Update(routing);
  const std::vector<float> want = {0, 0, 0, 0, -0.5f, 0.5f, 0.5f, 0.5f, 0, 0, 0, 0};
  EXPECT_EQ(bias.biases(), want);
  routing[1].routed_per_expert = {5, 5, 5, 5};  // balanced: no move
  bias.Update(routing);
  EXPECT_EQ(bias.biases(), want);
}

}  // namespace
}  // namespace openmoe
