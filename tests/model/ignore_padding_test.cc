// router.ignore_padding_tokens (flaxformer's TokensChooseMaskedRouter): padding tokens are not
// routed, take no capacity, add nothing to the load-balance or router z-loss sums (the group size
// still divides), are left out of the routing statistics, and the MoE's gradients stay exact.
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/kernels.h"
#include "gtest/gtest.h"
#include "model/moe.h"
#include "model/router.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

using I32 = std::vector<int32_t>;
using I64 = std::vector<int64_t>;

RoutingConfig Config(bool ignore_padding) {
  return {.num_experts = 3, .top_k = 2, .group_size = 6, .capacity_factor = 1.0,
          .min_capacity = 1, .ignore_padding_tokens = ignore_padding};
}

// Six tokens, three experts, capacity 2; choices (first, second):
//   t0 (0,1)  t1 (1,0)  t2 (0,2)  t3 (0,1)  t4 (2,1)  t5 (1,2)
const std::vector<float> kLogits = {3, 2, 0, 2, 3, 0, 3, 0, 2, 3, 2, 0, 0, 2, 3, 0, 3, 2};
// t0 and t3 are padding.
const I32 kSegments = {0, 1, 1, 0, 1, 1};

Routing Route(bool ignore_padding) {
  std::vector<float> identity(9, 0.0f);
  for (int i = 0; i < 3; ++i) identity[i * 3 + i] = 1.0f;
  Routing r;
  ComputeRouting(Config(ignore_padding), kLogits.data(), identity.data(), 6, 3, &r,
                 kSegments.data());
  return r;
}

TEST(IgnorePaddingTest, PaddingTakesNoCapacity) {
  // Padding routed (the default): t0 and t3 take expert 0's slots, and t1's second choice
  // (expert 0, slot 3) is dropped, as are t4's and t5's.
  const Routing routed = Route(false);
  EXPECT_EQ(routed.choice_slot, (I32{0, -1, 0, -1, 1, 1, -1, -1, 0, -1, 1, -1}));
  // Ignored: the real tokens t1, t2, t4, t5 alone. First choices: e1 <- t1 s0, t5 s1;
  // e0 <- t2 s0; e2 <- t4 s0. Second: t1 -> e0 s1 (kept now), t2 -> e2 s1, t4 -> e1 s2 (dropped),
  // t5 -> e2 s2 (dropped).
  const Routing r = Route(true);
  EXPECT_EQ(r.choice_expert, (I32{-1, -1, 1, 0, 0, 2, -1, -1, 2, 1, 1, 2}));
  EXPECT_EQ(r.choice_slot, (I32{-1, -1, 0, 1, 0, 1, -1, -1, 0, -1, 1, -1}));
  EXPECT_FALSE(r.IsRouted(0));
  EXPECT_FALSE(r.IsRouted(3));
  for (int64_t t : r.kept_token) EXPECT_TRUE(t != 0 && t != 3) << t;
  EXPECT_EQ(r.NumKept(), 6);
}

TEST(IgnorePaddingTest, RouterLossesCountRealTokensOnly) {
  const Routing r = Route(true);
  // By hand, over the real tokens of the one group of G = 6: f_e = choices / G, P_e = sum p / G,
  // load balance = E * sum_e f_e P_e; z = sum of lse^2 over real tokens.
  const int64_t g = 6, e_count = 3;
  std::vector<double> f(e_count, 0.0), p(e_count, 0.0);
  double z = 0;
  for (int64_t t = 0; t < 6; ++t) {
    if (kSegments[t] == 0) continue;
    const float* l = kLogits.data() + t * e_count;
    const double norm = std::exp(l[0]) + std::exp(l[1]) + std::exp(l[2]);
    int best = 0, second = -1;
    for (int e = 1; e < 3; ++e)
      if (l[e] > l[best]) best = e;
    for (int e = 0; e < 3; ++e)
      if (e != best && (second < 0 || l[e] > l[second])) second = e;
    f[best] += 1.0 / g;
    f[second] += 1.0 / g;
    for (int e = 0; e < 3; ++e) p[e] += std::exp(l[e]) / norm / g;
    z += std::log(norm) * std::log(norm);
  }
  double lb = 0;
  for (int e = 0; e < 3; ++e) lb += e_count * f[e] * p[e];
  const RouterLossSums sums = ComputeRouterLossSums(r);
  EXPECT_NEAR(sums.load_balance, lb, 1e-6);
  EXPECT_NEAR(sums.z_loss, z, 1e-5);
  // Routing the padding too gives a different value (the test can tell the two apart).
  EXPECT_GT(std::fabs(ComputeRouterLossSums(Route(false)).load_balance - lb), 0.05);
}

TEST(IgnorePaddingTest, StatisticsLeaveOutPadding) {
  const RoutingStats s = ComputeRoutingStats(Route(true), /*seq_len=*/6, /*buckets=*/2);
  EXPECT_EQ(s.tokens, 4);
  EXPECT_EQ(s.routed_per_expert, (I64{2, 3, 3}));
  EXPECT_EQ(s.kept_per_expert, (I64{2, 2, 2}));
  EXPECT_EQ(s.dropped_by_choice, (I64{0, 2}));
  EXPECT_EQ(s.routed_by_position_bucket, (I64{4, 4}));  // t1, t2 | t4, t5
}

TEST(IgnorePaddingTest, DropProbabilityOrderSkipsPadding) {
  RoutingConfig config = Config(true);
  config.drop_policy = DROP_PROBABILITY_ORDER;
  std::vector<float> identity(9, 0.0f);
  for (int i = 0; i < 3; ++i) identity[i * 3 + i] = 1.0f;
  Routing r;
  ComputeRouting(config, kLogits.data(), identity.data(), 6, 3, &r, kSegments.data());
  for (int j = 0; j < 2; ++j) {
    EXPECT_EQ(r.choice_slot[0 * 2 + j], -1);
    EXPECT_EQ(r.choice_slot[3 * 2 + j], -1);
  }
  for (int64_t t : r.kept_token) EXPECT_TRUE(t != 0 && t != 3) << t;
}

// The MoE layer's gradients with padded rows: two groups of 8 tokens, the last 3 of each group
// padding. L = sum(y * u) + a * load_balance_sum + b * z_sum.
TEST(IgnorePaddingGradTest, MoeGradientsMatchFiniteDifferences) {
  const int64_t tokens = 16, d = 8, f = 6, experts = 4;
  const MoeDims dims{.tokens = tokens, .d_model = d, .expert_d_ff = f, .num_experts = experts};
  const RoutingConfig config{.num_experts = experts, .top_k = 2, .group_size = 8,
                             .capacity_factor = 1.0, .min_capacity = 1,
                             .ignore_padding_tokens = true};
  std::vector<float> router(d * experts), wi_0(experts * d * 2 * f), wi_1(experts * d * f),
      wo(experts * f * d), x(tokens * d), u(tokens * d);
  testing::FillNormal(wi_0.data(), wi_0.size(), 0.5, 2);
  testing::FillNormal(wi_1.data(), wi_1.size(), 0.5, 3);
  testing::FillNormal(wo.data(), wo.size(), 0.5, 4);
  testing::FillNormal(x.data(), x.size(), 1.0, 5);
  testing::FillNormal(u.data(), u.size(), 1.0, 6);
  // Clear routing margins, so that no perturbation of the check flips a choice: token t's logits
  // are about +2 on its first and +1 on its second choice (x[:, :E] holds the pattern, the
  // router's first E rows are the identity, its other rows small).
  testing::FillNormal(router.data(), router.size(), 0.1, 1);
  for (int64_t i = 0; i < experts; ++i)
    for (int64_t j = 0; j < experts; ++j) router[i * experts + j] = i == j ? 1.0f : 0.0f;
  const int kChoices[16][2] = {{0, 1}, {0, 1}, {2, 0}, {0, 2}, {1, 3}, {0, 1}, {0, 1}, {0, 1},
                               {3, 2}, {1, 3}, {3, 0}, {0, 1}, {1, 2}, {3, 1}, {3, 1}, {3, 1}};
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < experts; ++j) x[t * d + j] = 0.0f;
    x[t * d + kChoices[t][0]] = 2.0f;
    x[t * d + kChoices[t][1]] = 1.0f;
  }
  // The padding of group 0 would claim expert 0's capacity, group 1's expert 3's.
  I32 segments(tokens, 1);
  for (int64_t t : {5, 6, 7, 13, 14, 15}) segments[t] = 0;
  const double a = 0.3, b = 0.05;
  const MoeWeights w{router.data(), wi_0.data(), wi_1.data(), wo.data()};

  auto forward = [&](MoeCache* cache, std::vector<float>* y) {
    cache->segment_ids = segments.data();
    y->assign(x.size(), 0.0f);
    const RouterLossSums s = MoeForward(dims, config, w, x.data(), cache, y->data());
    return Dot(y->data(), u.data(), y->size()) + a * s.load_balance + b * s.z_loss;
  };
  MoeCache cache;
  std::vector<float> y;
  forward(&cache, &y);
  const I32 experts_chosen = cache.routing.choice_expert, slots = cache.routing.choice_slot;
  for (int64_t t : {5, 6, 7, 13, 14, 15})
    for (int64_t i = 0; i < d; ++i) EXPECT_EQ(y[t * d + i], 0.0f) << "padding token " << t;

  std::vector<float> gx(x.size()), grouter(router.size()), gwi0(wi_0.size()), gwi1(wi_1.size()),
      gwo(wo.size());
  MoeBackward(dims, w, x.data(), &cache, u.data(), a, b,
              {grouter.data(), gwi0.data(), gwi1.data(), gwo.data()}, gx.data());
  // Padding adds nothing: its input gets no gradient through the MoE.
  for (int64_t t : {5, 6, 7, 13, 14, 15})
    for (int64_t i = 0; i < d; ++i) EXPECT_EQ(gx[t * d + i], 0.0f) << "padding token " << t;

  int routing_changes = 0;
  auto loss = [&]() {
    MoeCache c;
    std::vector<float> yy;
    const double l = forward(&c, &yy);
    if (c.routing.choice_expert != experts_chosen || c.routing.choice_slot != slots)
      ++routing_changes;
    return l;
  };
  testing::ExpectGradientMatches("x", loss, x.data(), x.size(), gx.data());
  testing::ExpectGradientMatches("router", loss, router.data(), router.size(), grouter.data());
  testing::ExpectGradientMatches("wi_0", loss, wi_0.data(), wi_0.size(), gwi0.data());
  testing::ExpectGradientMatches("wi_1", loss, wi_1.data(), wi_1.size(), gwi1.data());
  testing::ExpectGradientMatches("wo", loss, wo.data(), wo.size(), gwo.data());
  EXPECT_EQ(routing_changes, 0) << "a perturbation changed the routing; the check is invalid";
}

}  // namespace
}  // namespace openmoe
