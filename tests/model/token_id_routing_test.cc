// Token-id routing: the tables built from counted router decisions, routing by them (capacity
// still applies, padding still ignored when asked), and the MoE's gradients under it (no router
// gradient; the table's gates are constants).
#include "model/token_id_routing.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/kernels.h"
#include "gtest/gtest.h"
#include "model/moe.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

using I32 = std::vector<int32_t>;

// A router routing of tokens whose top-k choices are given: probs are set by hand.
Routing Decisions(const std::vector<I32>& choices, const std::vector<std::vector<float>>& probs) {
  Routing r;
  r.num_tokens = static_cast<int64_t>(choices.size());
  r.num_experts = static_cast<int64_t>(probs[0].size());
  r.top_k = static_cast<int64_t>(choices[0].size());
  r.group_size = r.num_tokens;
  r.probs.ResizeUninitialized({r.num_tokens, r.num_experts});
  for (size_t t = 0; t < choices.size(); ++t) {
    r.choice_expert.insert(r.choice_expert.end(), choices[t].begin(), choices[t].end());
    for (int64_t e = 0; e < r.num_experts; ++e) r.probs[t * r.num_experts + e] = probs[t][e];
  }
  return r;
}

// Layer 1 of a model whose MoE layers are {1, 3}; vocabulary 6, 4 experts, top-2.
TokenIdTables CountedTables() {
  TokenIdTables tables({1, 3}, /*vocab=*/6, /*num_experts=*/4, /*top_k=*/2);
  // Id 2 three times: choices (3,1), (3,0), (1,3) -> counts e3: 3, e1: 2, e0: 1 -> experts (3, 1).
  // Id 5 once: (0,2). Id 4 once, but as padding (not routed): not counted.
  const Routing r = Decisions(
      {{3, 1}, {3, 0}, {1, 3}, {0, 2}, {-1, -1}},
      {{0.1f, 0.2f, 0.0f, 0.7f}, {0.3f, 0.0f, 0.1f, 0.6f}, {0.0f, 0.5f, 0.1f, 0.4f},
       {0.5f, 0.1f, 0.3f, 0.1f}, {0.25f, 0.25f, 0.25f, 0.25f}});
  const I32 ids = {2, 2, 2, 5, 4};
  tables.Count(1, r, ids.data());
  tables.MergePending();
  tables.Build();
  return tables;
}

TEST(TokenIdTablesTest, ExpertsByCountGatesByMeanProbability) {
  const TokenIdTables tables = CountedTables();
  const int32_t* e2 = tables.Experts(1, 2);
  EXPECT_EQ(e2[0], 3);
  EXPECT_EQ(e2[1], 1);
  const float* g2 = tables.Gates(1, 2);
  EXPECT_NEAR(g2[0], (0.1 + 0.3 + 0.0) / 3, 1e-6);
  EXPECT_NEAR(g2[1], (0.2 + 0.0 + 0.5) / 3, 1e-6);
  EXPECT_NEAR(g2[3], (0.7 + 0.6 + 0.4) / 3, 1e-6);
  EXPECT_EQ(tables.Experts(1, 5)[0], 0);
  EXPECT_EQ(tables.Experts(1, 5)[1], 2);
  // Stats: occurrences, chosen (E), prob sums (E, in units of 2^-20) per (layer, id).
  const std::vector<int64_t>& s = tables.stats();
  EXPECT_EQ(s[(0 * 6 + 2) * 9 + 0], 3);
  EXPECT_EQ(s[(0 * 6 + 2) * 9 + 1 + 3], 3);
  EXPECT_EQ(s[(0 * 6 + 2) * 9 + 5 + 3], std::llround(0.7f * 1048576.0) +
                                             std::llround(0.6f * 1048576.0) +
                                             std::llround(0.4f * 1048576.0));
  EXPECT_EQ(s[(0 * 6 + 4) * 9 + 0], 0);  // padding, not routed: not counted
}

TEST(TokenIdTablesTest, EncodingIsExactForLargeCounts) {
  TokenIdTables tables = CountedTables();
  std::vector<int64_t> want = tables.stats();
  // Counts far beyond float's 2^24: a pending sum merged in, then encode / decode.
  tables.pending()[3] = (int64_t{1} << 47) + 12345;
  want[3] += tables.pending()[3];
  tables.MergePending();
  int64_t n = 1;
  for (int64_t d : tables.EncodedShape()) n *= d;
  std::vector<float> encoded(n);
  tables.Encode(encoded.data());
  TokenIdTables other({1, 3}, 6, 4, 2);
  other.Decode(encoded.data());
  EXPECT_EQ(other.stats(), want);
}

TEST(TokenIdTablesTest, UnseenIdsFallBackDeterministically) {
  const TokenIdTables tables = CountedTables();
  // Id 4 (only padding) and every id of layer 3: experts (id + j) mod E, gates 1/E.
  for (int32_t id : {0, 1, 3, 4}) {
    EXPECT_EQ(tables.Experts(1, id)[0], id % 4) << id;
    EXPECT_EQ(tables.Experts(1, id)[1], (id + 1) % 4) << id;
  }
  EXPECT_EQ(tables.Experts(3, 2)[0], 2);
  EXPECT_EQ(tables.Experts(3, 2)[1], 3);
  for (int e = 0; e < 4; ++e) EXPECT_EQ(tables.Gates(3, 5)[e], 0.25f);
}

TEST(TokenIdTablesTest, TiesGoToTheLowerExpert) {
  TokenIdTables tables({0}, 2, 4, 2);
  const Routing r = Decisions({{2, 1}, {1, 2}}, {{0, 0.4f, 0.6f, 0}, {0, 0.6f, 0.4f, 0}});
  const I32 ids = {0, 0};
  tables.Count(0, r, ids.data());
  tables.MergePending();
  tables.Build();
  EXPECT_EQ(tables.Experts(0, 0)[0], 1);  // e1 and e2 both chosen twice
  EXPECT_EQ(tables.Experts(0, 0)[1], 2);
}

TEST(TokenIdRoutingTest, RoutingEqualsTheTableWithCapacity) {
  const TokenIdTables tables = CountedTables();
  // Six tokens of id 2 in one group, capacity 2: all want (3, 1). First choices: e3 takes t0, t1;
  // second choices: e1 takes t0, t1. t2..t5 are dropped entirely.
  RoutingConfig config{.num_experts = 4, .top_k = 2, .group_size = 6, .capacity_factor = 1.0,
                       .min_capacity = 2};
  const I32 ids = {2, 2, 2, 2, 2, 2};
  Routing r;
  RouteByTokenId(config, tables, 1, ids.data(), nullptr, 6, &r);
  EXPECT_TRUE(r.from_table);
  EXPECT_EQ(r.capacity, 2);
  for (int t = 0; t < 6; ++t) {
    EXPECT_EQ(r.choice_expert[t * 2], 3);
    EXPECT_EQ(r.choice_expert[t * 2 + 1], 1);
  }
  EXPECT_EQ(r.choice_slot, (I32{0, 0, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1}));
  ASSERT_EQ(r.NumKept(), 4);
  EXPECT_NEAR(r.kept_gate[0], tables.Gates(1, 2)[1], 0);  // expert 1 comes first in dispatch order
  const RouterLossSums sums = ComputeRouterLossSums(r);
  EXPECT_EQ(sums.load_balance, 0.0);
  EXPECT_EQ(sums.z_loss, 0.0);
}

TEST(TokenIdRoutingTest, PaddingIsStillIgnored) {
  const TokenIdTables tables = CountedTables();
  RoutingConfig config{.num_experts = 4, .top_k = 2, .group_size = 3, .capacity_factor = 2.0,
                       .min_capacity = 1, .ignore_padding_tokens = true};
  const I32 ids = {5, 2, 0}, segments = {1, 0, 1};
  Routing r;
  RouteByTokenId(config, tables, 1, ids.data(), segments.data(), 3, &r);
  EXPECT_EQ(r.choice_expert, (I32{0, 2, -1, -1, 0, 1}));
  EXPECT_EQ(r.NumKept(), 4);
}

// Under token-id routing the MoE's loss is sum(y * u) (no router losses): finite differences of
// x and the experts match the backward, and the router gets exactly zero gradient.
TEST(TokenIdRoutingGradTest, NoRouterGradientExactExpertGradients) {
  const TokenIdTables tables = CountedTables();
  const int64_t tokens = 6, d = 8, f = 6, experts = 4;
  const MoeDims dims{.tokens = tokens, .d_model = d, .expert_d_ff = f, .num_experts = experts};
  RoutingConfig config{.num_experts = experts, .top_k = 2, .group_size = 6,
                       .capacity_factor = 1.0, .min_capacity = 1};
  config.token_id_tables = &tables;
  std::vector<float> router(d * experts), wi_0(experts * d * 2 * f), wi_1(experts * d * f),
      wo(experts * f * d), x(tokens * d), u(tokens * d);
  testing::FillNormal(router.data(), router.size(), 0.6, 1);
  testing::FillNormal(wi_0.data(), wi_0.size(), 0.5, 2);
  testing::FillNormal(wi_1.data(), wi_1.size(), 0.5, 3);
  testing::FillNormal(wo.data(), wo.size(), 0.5, 4);
  testing::FillNormal(x.data(), x.size(), 1.0, 5);
  testing::FillNormal(u.data(), u.size(), 1.0, 6);
  const I32 ids = {2, 5, 2, 0, 3, 2};
  const MoeWeights w{router.data(), wi_0.data(), wi_1.data(), wo.data()};
  auto forward = [&](MoeCache* cache) {
    cache->token_ids = ids.data();
    std::vector<float> y(x.size());
    const RouterLossSums s = MoeForward(dims, config, w, x.data(), cache, y.data(), nullptr, 1);
    EXPECT_EQ(s.load_balance, 0.0);
    return Dot(y.data(), u.data(), y.size());
  };
  MoeCache cache;
  forward(&cache);
  std::vector<float> gx(x.size()), grouter(router.size()), gwi0(wi_0.size()), gwi1(wi_1.size()),
      gwo(wo.size());
  MoeBackward(dims, w, x.data(), &cache, u.data(), 0.3, 0.05,
              {grouter.data(), gwi0.data(), gwi1.data(), gwo.data()}, gx.data(), nullptr, 1);
  for (float g : grouter) EXPECT_EQ(g, 0.0f);
  auto loss = [&]() {
    MoeCache c;
    return forward(&c);
  };
  testing::ExpectGradientMatches("x", loss, x.data(), x.size(), gx.data());
  testing::ExpectGradientMatches("wi_0", loss, wi_0.data(), wi_0.size(), gwi0.data());
  testing::ExpectGradientMatches("wi_1", loss, wi_1.data(), wi_1.size(), gwi1.data());
  testing::ExpectGradientMatches("wo", loss, wo.data(), wo.size(), gwo.data());
}

}  // namespace
}  // namespace openmoe
