#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/kernels.h"
#include "model/expert_bias.h"
#include "gtest/gtest.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

using testing::ExpectGradientMatches;
using testing::FillNormal;

// A small MoE layer with owned weights, inputs and an upstream gradient r (the loss is
// L = sum(y * r) + a * load_balance_sum + b * z_sum).
struct Layer {
  MoeDims dims;
  RoutingConfig config;
  std::vector<float> router, wi_0, wi_1, wo, x, r;
  std::vector<float> jitter;  // (T, d) router-input noise, or empty (no jitter)
  int64_t seq_len = 0;        // tokens per row (per-sequence balancing), 0: not given

  Layer(int64_t tokens, int64_t d, int64_t f, int64_t experts, FfnForm form) {
    dims = {.tokens = tokens, .d_model = d, .expert_d_ff = f, .form = form, .num_experts = experts};
    const int64_t w0 = FfnDims{.d_ff = f, .form = form}.Wi0Width();
    router.resize(d * experts);
    wi_0.resize(experts * d * w0);
    wi_1.resize(experts * d * f);
    wo.resize(experts * f * d);
    x.resize(tokens * d);
    r.resize(tokens * d);
    FillNormal(wi_0.data(), wi_0.size(), 0.5, 11);
    FillNormal(wi_1.data(), wi_1.size(), 0.5, 12);
    FillNormal(wo.data(), wo.size(), 0.5, 13);
    FillNormal(x.data(), x.size(), 1.0, 14);
    FillNormal(r.data(), r.size(), 1.0, 15);
  }
  MoeWeights Weights() const {
    return {.router = router.data(), .wi_0 = wi_0.data(), .wi_1 = wi_1.data(), .wo = wo.data()};
  }
  std::vector<float> Forward(MoeCache* cache, RouterLossSums* sums = nullptr) const {
    std::vector<float> y(x.size(), std::nanf(""));  // MoeForward must overwrite every entry
    if (!jitter.empty()) {
      cache->jitter.ResizeUninitialized({dims.tokens, dims.d_model});
      std::copy(jitter.begin(), jitter.end(), cache->jitter.data());
    }
    cache->seq_len = seq_len;
    const RouterLossSums s = MoeForward(dims, config, Weights(), x.data(), cache, y.data());
    if (sums != nullptr) *sums = s;
    return y;
  }
  // Gradients of the loss for the forward held in `cache`, accumulated into zeroed buffers.
  struct Grads {
    std::vector<float> x, router, wi_0, wi_1, wo;
  };
  Grads Backward(double a, double b, MoeCache* cache) const {
    Grads g{std::vector<float>(x.size()), std::vector<float>(router.size()),
            std::vector<float>(wi_0.size()), std::vector<float>(wi_1.size()),
            std::vector<float>(wo.size())};
    MoeBackward(dims, Weights(), x.data(), cache, r.data(), a, b,
                {.router = g.router.data(),
                 .wi_0 = g.wi_0.data(),
                 .wi_1 = g.wi_1.data(),
                 .wo = g.wo.data()},
                g.x.data());
    return g;
  }
  double Loss(double a, double b, MoeCache* cache) const {
    RouterLossSums sums;
    const std::vector<float> y = Forward(cache, &sums);
    return Dot(y.data(), r.data(), y.size()) + a * sums.load_balance + b * sums.z_loss;
  }
};

// Sets x and the router so that token t's router logits are about
// choices[t] = (first, second) -> +2 on first, +1 on second, 0 elsewhere, plus noise of std ~0.2:
// x[:, :E] holds that pattern, w_router[:E] = I, and the other rows of w_router are small.
void SetRouting(Layer* layer, const std::vector<std::pair<int, int>>& choices) {
  const int64_t d = layer->dims.d_model, e = layer->dims.num_experts;
  FillNormal(layer->router.data(), layer->router.size(), 0.1, 16);
  for (int64_t i = 0; i < e; ++i) {
    for (int64_t j = 0; j < e; ++j) layer->router[i * e + j] = i == j ? 1.0f : 0.0f;
  }
  for (size_t t = 0; t < choices.size(); ++t) {
    for (int64_t j = 0; j < e; ++j) layer->x[t * d + j] = 0.0f;
    layer->x[t * d + choices[t].first] = 2.0f;
    layer->x[t * d + choices[t].second] = 1.0f;
  }
}

// Two groups of 8 tokens, E = 4, capacity 2, top-2: 16 assignments for 8 slots per group.
// Group 0 never picks expert 3; tokens 2, 5 and 7 lose both choices.
const std::vector<std::pair<int, int>> kChoices = {
    {0, 1}, {0, 1}, {0, 1}, {2, 0}, {2, 1}, {2, 0}, {1, 2}, {0, 2},
    {3, 2}, {1, 3}, {3, 0}, {0, 1}, {1, 2}, {3, 1}, {2, 0}, {1, 0},
};

Layer DropLayer(FfnForm form) {
  Layer layer(16, 8, 6, 4, form);
  layer.config = {
      .num_experts = 4, .top_k = 2, .group_size = 8, .capacity_factor = 1.0, .min_capacity = 1};
  SetRouting(&layer, kChoices);
  return layer;
}

TEST(MoeTest, FullyDroppedTokensGetExactlyZero) {
  const Layer layer = DropLayer(FFN_OPENMOE);
  MoeCache cache;
  const std::vector<float> y = layer.Forward(&cache);
  const Routing& r = cache.routing;
  ASSERT_EQ(r.capacity, 2);
  for (int t = 0; t < 16; ++t) {
    ASSERT_EQ(r.choice_expert[2 * t], kChoices[t].first) << t;
    ASSERT_EQ(r.choice_expert[2 * t + 1], kChoices[t].second) << t;
  }
  for (int t : {2, 5, 7}) {
    EXPECT_EQ(r.choice_slot[2 * t], -1);
    EXPECT_EQ(r.choice_slot[2 * t + 1], -1);
    for (int j = 0; j < 8; ++j) EXPECT_EQ(y[t * 8 + j], 0.0f) << "token " << t;
  }
  EXPECT_NE(y[0], 0.0f);
}

// The layer against a per-token reference: y[t] = sum over kept choices of p * FFN_e(x[t]).
TEST(MoeTest, ForwardMatchesPerTokenReference) {
  const Layer layer = DropLayer(FFN_OPENMOE);
  MoeCache cache;
  const std::vector<float> y = layer.Forward(&cache);
  const Routing& r = cache.routing;
  const int64_t d = 8, f = 6;
  FfnCache ffn_cache;
  std::vector<float> out(d);
  for (int64_t t = 0; t < 16; ++t) {
    std::vector<double> expected(d, 0.0);
    for (int j = 0; j < 2; ++j) {
      if (r.choice_slot[t * 2 + j] < 0) continue;
      const int64_t e = r.choice_expert[t * 2 + j];
      const FfnWeights w = {.wi_0 = layer.wi_0.data() + e * d * 2 * f,
                            .wi_1 = layer.wi_1.data() + e * d * f,
                            .wo = layer.wo.data() + e * f * d};
      FfnForward({.tokens = 1, .d_model = d, .d_ff = f}, w, layer.x.data() + t * d, &ffn_cache,
                 out.data());
      for (int64_t i = 0; i < d; ++i) expected[i] += r.probs[t * 4 + e] * out[i];
    }
    for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(y[t * d + i], expected[i], 1e-5) << t << "," << i;
  }
}

// Finite differences are only valid while routing stays put: every evaluation of the loss checks
// that choices and slots equal the unperturbed ones. With h = 1e-2 the perturbations move a logit
// by ~0.03; the smallest top-1/top-2 and top-2/top-3 logit gap in DropLayer is 0.46.
// (Experts choosing: the tokens each expert took; a token's ranking of the experts it was not
// taken by does not matter.)
void CheckGradients(Layer layer, double a, double b) {
  MoeCache cache;
  layer.Forward(&cache);
  auto decisions = [](const Routing& r) {
    std::vector<int64_t> d(r.expert_offsets.begin(), r.expert_offsets.end());
    d.insert(d.end(), r.kept_token.begin(), r.kept_token.end());
    if (r.experts_choose) return d;
    d.insert(d.end(), r.choice_expert.begin(), r.choice_expert.end());
    d.insert(d.end(), r.choice_slot.begin(), r.choice_slot.end());
    return d;
  };
  const std::vector<int64_t> routed = decisions(cache.routing);
  int routing_changes = 0;
  auto loss = [&]() {
    MoeCache c;
    const double l = layer.Loss(a, b, &c);
    if (decisions(c.routing) != routed) ++routing_changes;
    return l;
  };

  const Layer::Grads g = layer.Backward(a, b, &cache);

  ExpectGradientMatches("x", loss, layer.x.data(), layer.x.size(), g.x.data());
  ExpectGradientMatches("router", loss, layer.router.data(), layer.router.size(), g.router.data());
  const int64_t e = layer.dims.num_experts;
  const int64_t n0 = layer.wi_0.size() / e, n1 = layer.wi_1.size() / e, no = layer.wo.size() / e;
  for (int64_t i = 0; i < e; ++i) {
    const std::string expert = "expert " + std::to_string(i);
    ExpectGradientMatches(expert + " wi_0", loss, layer.wi_0.data() + i * n0, n0,
                          g.wi_0.data() + i * n0);
    ExpectGradientMatches(expert + " wi_1", loss, layer.wi_1.data() + i * n1, n1,
                          g.wi_1.data() + i * n1);
    ExpectGradientMatches(expert + " wo", loss, layer.wo.data() + i * no, no, g.wo.data() + i * no);
  }
  EXPECT_EQ(routing_changes, 0) << "a perturbation changed the routing; the check is invalid";
}

TEST(MoeGradTest, FullLossWithDrops) { CheckGradients(DropLayer(FFN_OPENMOE), 0.3, 0.05); }

TEST(MoeGradTest, FullLossWithDropsSwiglu) { CheckGradients(DropLayer(FFN_SWIGLU), 0.3, 0.05); }

// Router jitter of 5% (uniform noise fixed across evaluations): x reaches the loss through the
// experts un-jittered and through the router jittered; both paths' gradients must match.
TEST(MoeGradTest, FullLossWithRouterJitter) {
  Layer layer = DropLayer(FFN_OPENMOE);
  layer.jitter.resize(layer.x.size());
  const CounterRng rng(3, 4);
  for (size_t i = 0; i < layer.jitter.size(); ++i)
    layer.jitter[i] = static_cast<float>(0.95 + 0.1 * rng.Uniform(i));
  CheckGradients(layer, 0.3, 0.05);
  // The jitter acts: the router's logits differ from the un-jittered ones.
  Layer plain = DropLayer(FFN_OPENMOE);
  MoeCache with, without;
  layer.Forward(&with);
  plain.Forward(&without);
  EXPECT_NE(with.routing.logits[0], without.routing.logits[0]);
}

TEST(MoeGradTest, RouterLossesAlone) {
  Layer layer = DropLayer(FFN_OPENMOE);
  std::fill(layer.r.begin(), layer.r.end(), 0.0f);
  CheckGradients(layer, 1.0, 0.1);
}

TEST(MoeGradTest, GatesAloneDropless) {
  Layer layer = DropLayer(FFN_OPENMOE);
  layer.config.dropless = true;
  CheckGradients(layer, 0.0, 0.0);
}

// The routers after OpenMoE's (model/router.h), each through the full loss with drops.
TEST(MoeGradTest, SigmoidScores) {
  Layer layer = DropLayer(FFN_OPENMOE);
  layer.config.score_function = SIGMOID;
  CheckGradients(layer, 0.3, 0.05);
}

TEST(MoeGradTest, NormalizedTopKSoftmaxAndSigmoid) {
  for (ScoreFunction f : {SOFTMAX, SIGMOID}) {
    Layer layer = DropLayer(FFN_OPENMOE);
    layer.config.score_function = f;
    layer.config.normalize_top_k = true;
    CheckGradients(layer, 0.3, 0.05);
    // The gates of a token's kept choices: its scores over the sum of its top-2 scores.
    MoeCache cache;
    layer.Forward(&cache);
    const Routing& r = cache.routing;
    for (int64_t i = 0; i < r.NumKept(); ++i) {
      const int64_t t = r.kept_token[i];
      const float* s = r.probs.data() + t * 4;
      const int32_t e = r.choice_expert[t * 2 + r.kept_choice[i]];
      const double sum = s[r.choice_expert[t * 2]] + s[r.choice_expert[t * 2 + 1]];
      EXPECT_NEAR(r.kept_gate[i], s[e] / sum, 1e-6);
    }
  }
}

TEST(MoeGradTest, SigmoidLoadBalanceAlone) {
  Layer layer = DropLayer(FFN_OPENMOE);
  layer.config.score_function = SIGMOID;
  std::fill(layer.r.begin(), layer.r.end(), 0.0f);
  CheckGradients(layer, 1.0, 0.1);
}

TEST(MoeGradTest, SequenceAndGlobalBalanceScopes) {
  for (LoadBalanceScope scope : {SEQUENCE, GLOBAL_BATCH}) {
    for (ScoreFunction f : {SOFTMAX, SIGMOID}) {
      Layer layer = DropLayer(FFN_OPENMOE);
      layer.config.load_balance_scope = scope;
      layer.seq_len = 4;
      layer.config.score_function = f;
      CheckGradients(layer, 0.5, 0.05);
    }
  }
}

// Experts choosing need clear margins between the tokens an expert takes and the next one: the
// logits are x's first 4 columns, spread wide (w_router's other rows zero); the test checks the
// margins.
TEST(MoeGradTest, ExpertsChoose) {
  Layer layer = DropLayer(FFN_OPENMOE);
  layer.config.selection = EXPERTS_CHOOSE;
  layer.config.capacity_factor = 1.5;  // each expert takes 3 of a group's 8 tokens
  std::fill(layer.router.begin() + 16, layer.router.end(), 0.0f);
  FillNormal(layer.x.data(), layer.x.size(), 2.0, 21);
  MoeCache cache;
  layer.Forward(&cache);
  const Routing& r = cache.routing;
  ASSERT_EQ(r.capacity, 3);
  for (int64_t g = 0; g < 2; ++g) {
    for (int64_t e = 0; e < 4; ++e) {
      std::vector<float> p;
      for (int64_t t = g * 8; t < g * 8 + 8; ++t) p.push_back(r.probs[t * 4 + e]);
      std::sort(p.begin(), p.end(), std::greater<>());
      ASSERT_GT(p[2] - p[3], 0.02) << "group " << g << " expert " << e;
    }
  }
  CheckGradients(layer, 0.3, 0.05);
}

TEST(MoeGradTest, GroupLimitedWithSelectionBias) {
  Layer layer = DropLayer(FFN_OPENMOE);
  layer.config.num_expert_groups = 2;
  layer.config.groups_per_token = 1;
  ExpertBias bias(/*layers=*/1, /*num_experts=*/4, /*rate=*/0.0);
  bias.data()[3] = 0.3f;  // moves choices, not gates
  layer.config.expert_bias = &bias;
  CheckGradients(layer, 0.3, 0.05);
}

// Every token prefers expert 0 (and, with top-2, expert 1 next): each group keeps exactly
// `capacity` tokens per preferred expert, the others stay empty, and backward still works.
TEST(MoeTest, ForcedRoutingToOneExpert) {
  for (int64_t top_k : {1, 2}) {
    Layer layer(16, 8, 6, 4, FFN_OPENMOE);
    layer.config = {.num_experts = 4,
                    .top_k = top_k,
                    .group_size = 8,
                    .capacity_factor = 1.0,
                    .min_capacity = 1};
    for (float& v : layer.x) v = std::fabs(v) + 0.5f;
    std::fill(layer.router.begin(), layer.router.end(), 0.0f);
    for (int64_t i = 0; i < 8; ++i) {
      layer.router[i * 4 + 0] = 3.0f;
      layer.router[i * 4 + 1] = 1.0f;
    }
    MoeCache cache;
    const std::vector<float> y = layer.Forward(&cache);
    const Routing& r = cache.routing;
    ASSERT_EQ(r.capacity, 2);
    const std::vector<int64_t> kept_tokens = {0, 1, 8, 9};
    for (int64_t e = 0; e < 4; ++e) {
      const std::vector<int64_t> kept(r.kept_token.begin() + r.expert_offsets[e],
                                      r.kept_token.begin() + r.expert_offsets[e + 1]);
      EXPECT_EQ(kept, e < top_k ? kept_tokens : std::vector<int64_t>{}) << "expert " << e;
    }
    for (int64_t t = 0; t < 16; ++t) {
      const bool kept = t % 8 < 2;
      EXPECT_EQ(y[t * 8] != 0.0f, kept) << "token " << t;
    }

    const Layer::Grads g = layer.Backward(0.01, 1e-4, &cache);
    for (float v : g.x) ASSERT_TRUE(std::isfinite(v));
    for (float v : g.router) ASSERT_TRUE(std::isfinite(v));
    const int64_t n = g.wo.size() / 4;
    for (int64_t e = 0; e < 4; ++e) {
      const double norm = SumSquares(g.wo.data() + e * n, n);
      if (e < top_k) {
        EXPECT_GT(norm, 0.0) << "expert " << e;
      } else {
        EXPECT_EQ(norm, 0.0) << "expert " << e;
      }
    }
  }
}

}  // namespace
}  // namespace openmoe
