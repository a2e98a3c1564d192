// Router jitter noise: its range, its keying by global row and step (not by local position), and
// that jitter off leaves the MoE layer bit-identical.
#include "model/router_jitter.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "model/moe.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

Batch Rows(int64_t rows, int64_t seq_len, int64_t step, int64_t first_row) {
  Batch b;
  b.Resize(rows, seq_len);
  b.SetOrigin(step, first_row);
  return b;
}

TEST(RouterJitterTest, UniformWithinOneMinusEpsToOnePlusEps) {
  Tensor noise;
  FillRouterJitter(0.1, 7, 1, Rows(8, 16, 0, 0), 32, &noise);
  ASSERT_EQ(noise.size(), 8 * 16 * 32);
  double sum = 0, lo = 2, hi = 0;
  for (int64_t i = 0; i < noise.size(); ++i) {
    sum += noise[i];
    lo = std::min<double>(lo, noise[i]);
    hi = std::max<double>(hi, noise[i]);
  }
  EXPECT_GE(lo, 0.9f);
  EXPECT_LT(hi, 1.1f);
  EXPECT_LT(lo, 0.901);  // 4096 draws reach both ends
  EXPECT_GT(hi, 1.099);
  EXPECT_NEAR(sum / noise.size(), 1.0, 0.003);  // std of the mean: 0.1 / sqrt(3 * 4096)
}

TEST(RouterJitterTest, KeyedByGlobalRowStepAndLayerNotByLocalPosition) {
  const int64_t s = 4, d = 8;
  Tensor whole, part, other_step, other_layer;
  FillRouterJitter(0.2, 7, 1, Rows(8, s, 3, 0), d, &whole);
  // Rows 5..6 of the same global batch held by another chip, as a microbatch would slice them.
  Batch chip = Rows(4, s, 3, 4);
  FillRouterJitter(0.2, 7, 1, chip.Slice(1, 2), d, &part);
  EXPECT_EQ(0, std::memcmp(part.data(), whole.data() + 5 * s * d, 2 * s * d * sizeof(float)));
  FillRouterJitter(0.2, 7, 1, Rows(8, s, 4, 0), d, &other_step);
  FillRouterJitter(0.2, 7, 3, Rows(8, s, 3, 0), d, &other_layer);
  EXPECT_NE(other_step[0], whole[0]);
  EXPECT_NE(other_layer[0], whole[0]);
  // Appending chips keeps their row ids.
  Batch two = Rows(4, s, 3, 0);
  two.Append(Rows(4, s, 3, 4));
  Tensor appended;
  FillRouterJitter(0.2, 7, 1, two, d, &appended);
  EXPECT_EQ(0, std::memcmp(appended.data(), whole.data(), whole.size() * sizeof(float)));
}

// No jitter (an empty cache->jitter, what the decoder sets when router.jitter_noise is 0) and a
// jitter of exactly 1.0 (x * 1 == x in fp32) take different code paths and must agree bit for bit.
TEST(RouterJitterTest, UnitJitterIsBitIdenticalToNone) {
  const int64_t t = 16, d = 8, f = 4, e = 4;
  const MoeDims dims{.tokens = t, .d_model = d, .expert_d_ff = f, .num_experts = e};
  const RoutingConfig config{.num_experts = e, .top_k = 2, .group_size = 8, .min_capacity = 1};
  std::vector<float> router(d * e), wi_0(e * d * 2 * f), wi_1(e * d * f), wo(e * f * d), x(t * d),
      dy(t * d);
  for (auto* v : {&router, &wi_0, &wi_1, &wo, &x, &dy})
    testing::FillNormal(v->data(), v->size(), 0.7, v->size());
  const MoeWeights w{router.data(), wi_0.data(), wi_1.data(), wo.data()};
  auto run = [&](bool unit_jitter, std::vector<float>* y, std::vector<float>* dx,
                 std::vector<float>* drouter) {
    MoeCache cache;
    if (unit_jitter) {
      cache.jitter.ResizeUninitialized({t, d});
      for (int64_t i = 0; i < t * d; ++i) cache.jitter[i] = 1.0f;
    }
    y->assign(t * d, 0);
    dx->assign(t * d, 0);
    drouter->assign(d * e, 0);
    std::vector<float> g0(wi_0.size()), g1(wi_1.size()), go(wo.size());
    MoeForward(dims, config, w, x.data(), &cache, y->data());
    MoeBackward(dims, w, x.data(), &cache, dy.data(), 0.3, 0.05,
                {drouter->data(), g0.data(), g1.data(), go.data()}, dx->data());
  };
  std::vector<float> y0, dx0, dr0, y1, dx1, dr1;
  run(false, &y0, &dx0, &dr0);
  run(true, &y1, &dx1, &dr1);
  EXPECT_EQ(0, std::memcmp(y0.data(), y1.data(), y0.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(dr0.data(), dr1.data(), dr0.size() * sizeof(float)));
  // dx: the jittered path computes dlogits @ w^T into scratch and adds it, the plain path
  // accumulates in the GEMM; equal to rounding.
  for (size_t i = 0; i < dx0.size(); ++i)
    EXPECT_NEAR(dx0[i], dx1[i], 1e-6 * (1 + std::fabs(dx0[i])));
}

}  // namespace
}  // namespace openmoe
