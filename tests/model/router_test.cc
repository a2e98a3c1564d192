#include "model/router.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace openmoe {
namespace {

using I32 = std::vector<int32_t>;
using I64 = std::vector<int64_t>;

RoutingConfig Config(int64_t num_experts, int64_t group_size, double capacity_factor,
                     int64_t min_capacity, int64_t top_k = 2) {
  return {.num_experts = num_experts,
          .top_k = top_k,
          .group_size = group_size,
          .capacity_factor = capacity_factor,
          .min_capacity = min_capacity};
}

// Routes tokens whose router logits are exactly `logits` (T, E): x = logits, w_router = I.
Routing RouteLogits(const RoutingConfig& config, const std::vector<float>& logits) {
  const int64_t e = config.num_experts;
  std::vector<float> identity(e * e, 0.0f);
  for (int64_t i = 0; i < e; ++i) identity[i * e + i] = 1.0f;
  Routing routing;
  ComputeRouting(config, logits.data(), identity.data(), logits.size() / e, e, &routing);
  return routing;
}

// The kept tokens of expert e in dispatch order.
std::vector<int64_t> KeptTokens(const Routing& r, int e) {
  return {r.kept_token.begin() + r.expert_offsets[e],
          r.kept_token.begin() + r.expert_offsets[e + 1]};
}

TEST(RouterCapacityTest, RoundsHalfToEvenLikePython) {
  EXPECT_EQ(ExpertCapacity(Config(3, 6, 1.25, 1)), 2);  // 2.5 -> 2
  EXPECT_EQ(ExpertCapacity(Config(4, 8, 1.75, 1)), 4);  // 3.5 -> 4
  EXPECT_EQ(ExpertCapacity(Config(4, 8, 1.3, 1)), 3);   // 2.6 -> 3
  EXPECT_EQ(ExpertCapacity(Config(16, 1024, 1.25, 4)), 80);
  EXPECT_EQ(ExpertCapacity(Config(32, 1024, 2.0, 4)), 64);
}

TEST(RouterCapacityTest, MinCapacityBinds) {
  EXPECT_EQ(ExpertCapacity(Config(16, 16, 1.25, 4)), 4);  // round(1.25) = 1 < 4
  EXPECT_EQ(ExpertCapacity(Config(16, 64, 1.25, 4)), 5);  // 5 > 4
}

TEST(RouterCapacityTest, DroplessIsGroupSize) {
  RoutingConfig config = Config(4, 8, 0.1, 1);
  config.dropless = true;
  EXPECT_EQ(ExpertCapacity(config), 8);
}

// Six tokens, three experts, capacity 2. Choices (first, second) by token:
//   t0 (0,1)  t1 (1,0)  t2 (0,2)  t3 (0,1)  t4 (2,1)  t5 (1,2)
// First choices in token order: e0 <- t0 s0, t2 s1, t3 s2 (dropped); e1 <- t1 s0, t5 s1;
// e2 <- t4 s0. Second choices: t0 -> e1 s2 (dropped: it loses to t5's later first choice),
// t1 -> e0 s3 (dropped), t2 -> e2 s1 (kept), t3 -> e1 s3, t4 -> e1 s4, t5 -> e2 s2 (dropped).
const std::vector<float> kSixTokenLogits = {
    3, 2, 0,  // t0
    2, 3, 0,  // t1
    3, 0, 2,  // t2
    3, 2, 0,  // t3
    0, 2, 3,  // t4
    0, 3, 2,  // t5
};

TEST(RouterTest, TokenOrderFirstChoicesBeatSecondChoices) {
  const Routing r = RouteLogits(Config(3, 6, 1.0, 1), kSixTokenLogits);
  EXPECT_EQ(r.capacity, 2);
  EXPECT_EQ(r.choice_expert, (I32{0, 1, 1, 0, 0, 2, 0, 1, 2, 1, 1, 2}));
  EXPECT_EQ(r.choice_slot, (I32{0, -1, 0, -1, 1, 1, -1, -1, 0, -1, 1, -1}));
  EXPECT_EQ(r.expert_offsets, (I64{0, 2, 4, 6}));
  EXPECT_EQ(KeptTokens(r, 0), (I64{0, 2}));
  EXPECT_EQ(KeptTokens(r, 1), (I64{1, 5}));
  EXPECT_EQ(KeptTokens(r, 2), (I64{4, 2}));  // by slot, not by token
  EXPECT_EQ(r.kept_choice, (I32{0, 0, 0, 0, 0, 1}));
  // Gates are the raw probabilities: t2's second choice (logit 2 of {3, 0, 2}).
  const double z = std::exp(3.0) + 1.0 + std::exp(2.0);
  EXPECT_NEAR(r.kept_gate[5], std::exp(2.0) / z, 1e-6);
  EXPECT_NEAR(r.kept_gate[0], std::exp(3.0) / z, 1e-6);
}

// Same logits, but the claim order follows the top-1 probability. t4 and t5 are the most
// confident; with probability order they claim first, and t0 / t1 / t3 lose.
TEST(RouterTest, ProbabilityOrderPrioritisesConfidentTokens) {
  // Top-1 probabilities: t0 0.42, t1 0.51, t2 0.67, t3 0.88, t4 0.95, t5 0.55.
  const std::vector<float> logits = {
      1.0, 1.0, 0.0,  // t0 -> (0, 1)
      0.0, 1.0, 0.5,  // t1 -> (1, 2)
      2.0, 0.0, 1.0,  // t2 -> (0, 2)
      3.0, 0.5, 0.0,  // t3 -> (0, 1)
      0.0, 0.5, 4.0,  // t4 -> (2, 1)
      0.0, 1.5, 1.0,  // t5 -> (1, 2)
  };
  RoutingConfig config = Config(3, 6, 1.0, 1);
  config.drop_policy = DROP_PROBABILITY_ORDER;
  const Routing r = RouteLogits(config, logits);
  // Claim order by top-1 probability: t4, t3, t2, t5, t1, t0.
  // First choices: e2 <- t4 s0; e0 <- t3 s0, t2 s1, t0 s2 (dropped); e1 <- t5 s0, t1 s1.
  // Second choices: t4 -> e1 s2 x, t3 -> e1 s3 x, t2 -> e2 s1, t5 -> e2 s2 x, t1 -> e2 s3 x,
  // t0 -> e1 s4 x.
  EXPECT_EQ(r.choice_expert, (I32{0, 1, 1, 2, 0, 2, 0, 1, 2, 1, 1, 2}));
  EXPECT_EQ(KeptTokens(r, 0), (I64{3, 2}));
  EXPECT_EQ(KeptTokens(r, 1), (I64{5, 1}));
  EXPECT_EQ(KeptTokens(r, 2), (I64{4, 2}));
  EXPECT_EQ(r.choice_slot, (I32{-1, -1, 1, -1, 1, 1, 0, -1, 0, -1, 0, -1}));

  // The token-order policy on the same logits keeps t0 instead of t3.
  const Routing token_order = RouteLogits(Config(3, 6, 1.0, 1), logits);
  EXPECT_EQ(KeptTokens(token_order, 0), (I64{0, 2}));
}

TEST(RouterTest, ProbabilityOrderIsStableOnTies) {
  // 32 identical tokens (enough that an unstable sort would reorder them), all to (0, 1),
  // capacity 4: the earliest four keep their slots.
  RoutingConfig config = Config(2, 32, 0.25, 1);
  config.drop_policy = DROP_PROBABILITY_ORDER;
  std::vector<float> logits;
  for (int t = 0; t < 32; ++t) logits.insert(logits.end(), {1, 0});
  const Routing r = RouteLogits(config, logits);
  EXPECT_EQ(KeptTokens(r, 0), (I64{0, 1, 2, 3}));
  EXPECT_EQ(KeptTokens(r, 1), (I64{0, 1, 2, 3}));
}

TEST(RouterTest, TopKTiesGoToLowerExpert) {
  const Routing r = RouteLogits(Config(4, 2, 1.0, 1), {1, 1, 1, 1, 0, 2, 2, 2});
  EXPECT_EQ(r.choice_expert, (I32{0, 1, 1, 2}));
}

TEST(RouterTest, DroplessKeepsEverything) {
  RoutingConfig config = Config(3, 6, 1.0, 1);
  config.dropless = true;
  const Routing r = RouteLogits(config, kSixTokenLogits);
  EXPECT_EQ(r.NumKept(), 12);
  for (int32_t slot : r.choice_slot) EXPECT_GE(slot, 0);
  EXPECT_EQ(KeptTokens(r, 0), (I64{0, 2, 3, 1}));  // first choices, then t1's second
  EXPECT_EQ(r.expert_offsets, (I64{0, 4, 9, 12}));
}

TEST(RouterTest, CapacityAppliesPerGroup) {
  // Two groups of 6 with identical logits: each group keeps the same pattern, and group 1's
  // assignments follow group 0's inside each expert.
  std::vector<float> logits = kSixTokenLogits;
  logits.insert(logits.end(), kSixTokenLogits.begin(), kSixTokenLogits.end());
  const Routing r = RouteLogits(Config(3, 6, 1.0, 1), logits);
  EXPECT_EQ(r.NumGroups(), 2);
  EXPECT_EQ(KeptTokens(r, 0), (I64{0, 2, 6, 8}));
  EXPECT_EQ(KeptTokens(r, 1), (I64{1, 5, 7, 11}));
  EXPECT_EQ(KeptTokens(r, 2), (I64{4, 2, 10, 8}));
  for (int i = 0; i < 12; ++i) EXPECT_EQ(r.choice_slot[12 + i], r.choice_slot[i]) << i;
}

TEST(RouterLossTest, UniformRouterGivesTopK) {
  // Zero logits: p = 1/E everywhere; ties send every token to experts (0, 1), so f = (1, 1, 0, 0)
  // and each group's load balance is E * (1/E + 1/E) = 2 = k. lse = log E.
  const Routing r = RouteLogits(Config(4, 3, 1.0, 1), std::vector<float>(6 * 4, 0.0f));
  const RouterLossSums sums = ComputeRouterLossSums(r);
  EXPECT_NEAR(sums.load_balance, 2 * 2.0, 1e-6);  // two groups
  EXPECT_NEAR(sums.z_loss, 6 * std::log(4.0) * std::log(4.0), 1e-5);
}

TEST(RouterLossTest, SkewedRouterClosedForm) {
  // top-1, two tokens both with logits (log 3, 0): p = (3/4, 1/4), f = (1, 0),
  // load balance = 2 * (1 * 3/4 + 0 * 1/4) = 1.5; lse = log 4.
  const float l3 = static_cast<float>(std::log(3.0));
  const Routing r = RouteLogits(Config(2, 2, 1.0, 1, /*top_k=*/1), {l3, 0, l3, 0});
  const RouterLossSums sums = ComputeRouterLossSums(r);
  EXPECT_NEAR(sums.load_balance, 1.5, 1e-6);
  EXPECT_NEAR(sums.z_loss, 2 * std::log(4.0) * std::log(4.0), 1e-5);
}

TEST(RouterLossTest, BackwardMatchesClosedForm) {
  // Same case: LB = E * f_0 * mean_t p0(t) = p0(t0) + p0(t1), so d LB / d l0(t) = p0 p1 = 3/16
  // and d LB / d l1(t) = -3/16.
  const float l3 = static_cast<float>(std::log(3.0));
  const Routing r = RouteLogits(Config(2, 2, 1.0, 1, /*top_k=*/1), {l3, 0, l3, 0});
  std::vector<float> dlogits(4, 0.0f);
  const std::vector<float> no_gates(4, 0.0f);
  RouterBackward(r, no_gates.data(), /*load_balance_scale=*/1.0, /*z_scale=*/0.0, dlogits.data());
  EXPECT_NEAR(dlogits[0], 3.0 / 16.0, 1e-6);
  EXPECT_NEAR(dlogits[1], -3.0 / 16.0, 1e-6);
  // z-loss: d lse^2 / d logits = 2 lse p, on top of what is there (accumulates).
  RouterBackward(r, no_gates.data(), 0.0, 1.0, dlogits.data());
  EXPECT_NEAR(dlogits[2], 3.0 / 16.0 + 2 * std::log(4.0) * 0.75, 1e-5);
}

TEST(RoutingStatsTest, CountsTheSixTokenCase) {
  const Routing r = RouteLogits(Config(3, 6, 1.0, 1), kSixTokenLogits);
  const RoutingStats s = ComputeRoutingStats(r, /*seq_len=*/6, /*buckets=*/2);
  EXPECT_EQ(s.routed_per_expert, (I64{4, 5, 3}));
  EXPECT_EQ(s.kept_per_expert, (I64{2, 2, 2}));
  EXPECT_EQ(s.dropped_by_choice, (I64{1, 5}));
  // Positions 0-2 in bucket 0, 3-5 in bucket 1; dropped: t0, t1 (second); t3 (both), t4, t5.
  EXPECT_EQ(s.dropped_by_position_bucket, (I64{2, 4}));
  EXPECT_EQ(s.routed_by_position_bucket, (I64{6, 6}));
  EXPECT_EQ(s.tokens, 6);
  EXPECT_EQ(s.tokens_fully_dropped, 1);  // t3
  // Every row is a permutation of logits (3, 2, 0).
  const double z = std::exp(3.0) + std::exp(2.0) + 1.0;
  double h = 0;
  for (double l : {3.0, 2.0, 0.0}) h -= std::exp(l) / z * std::log(std::exp(l) / z);
  EXPECT_NEAR(s.entropy_sum, 6 * h, 1e-5);

  RoutingStats total;
  total.Add(s);
  total.Add(s);
  EXPECT_EQ(total.dropped_by_choice, (I64{2, 10}));
  EXPECT_EQ(total.kept_per_expert, (I64{4, 4, 4}));
  EXPECT_EQ(total.tokens_fully_dropped, 2);
  EXPECT_NEAR(total.entropy_sum, 12 * h, 1e-5);
}

}  // namespace
}  // namespace openmoe
