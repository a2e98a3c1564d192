// AdamW against a naive double-precision loop written from the formulas in model/adamw.h, over
// several steps, with and without weight decay and global-norm clipping; and the layout
// invariance of its update (experts sharded over ranks update like the unsharded ones).
#include "model/adamw.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "model/optimizer.h"
#include "model/params.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

using testing::FillNormal;

ModelDims SmallDims() {
  ModelDims d;
  d.vocab_size = d.padded_vocab_size = 32;
  d.num_layers = 1;
  d.d_model = 16;
  d.num_heads = 2;
  d.head_dim = 8;
  d.d_ff = d.expert_d_ff = 8;
  d.num_experts = 4;
  d.moe_interval = 1;
  d.extra_dense_ffn = false;
  d.ffn_form = FFN_OPENMOE;
  return d;
}

// Runs `steps` steps of AdamW and of the naive loop from the same parameters and gradients (a new
// random gradient every step); expects every parameter within 1e-5 relative.
void ExpectMatchesNaive(const AdamWConfig& config, double clip, int steps, double grad_scale) {
  const ParamLayout layout(SmallDims());
  const int64_t n = layout.total_size();
  std::vector<float> params(n), grads(n);
  FillNormal(params.data(), n, 1.0, 1);
  AdamW adamw(config, clip, layout);

  // Naive: per element in double; decay on tensors of rank >= 2 (per expert).
  std::vector<double> p(params.begin(), params.end()), m(n, 0.0), v(n, 0.0);
  std::vector<bool> decayed(n, false);
  for (const ParamInfo& info : layout.params()) {
    const size_t rank = info.shape.size() - (info.is_expert ? 1 : 0);
    for (int64_t i = 0; i < info.size; ++i) decayed[info.offset + i] = rank >= 2;
  }
  const double b1 = config.beta1(), b2 = config.beta2(), eps = config.epsilon();
  for (int step = 0; step < steps; ++step) {
    FillNormal(grads.data(), n, 1.0, 100 + step);
    for (float& g : grads) g = static_cast<float>(g * grad_scale);
    const double lr = 1e-2 / (step + 1);
    double norm = 0;
    for (float g : grads) norm += static_cast<double>(g) * g;
    norm = std::sqrt(norm);
    const double scale = clip > 0 ? std::min(1.0, clip / norm) : 1.0;
    for (int64_t i = 0; i < n; ++i) {
      const double g = scale * grads[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double m_hat = m[i] / (1 - std::pow(b1, step + 1));
      const double v_hat = v[i] / (1 - std::pow(b2, step + 1));
      const double wd = decayed[i] ? config.weight_decay() : 0.0;
      p[i] -= lr * (m_hat / (std::sqrt(v_hat) + eps) + wd * p[i]);
    }
    adamw.Update(step, lr, params.data(), grads.data());
  }
  double max_err = 0;
  for (int64_t i = 0; i < n; ++i) {
    max_err = std::max(max_err, std::fabs(params[i] - p[i]) / std::max(1.0, std::fabs(p[i])));
  }
  EXPECT_LT(max_err, 1e-5);
  // And the state is m then v of every element.
  EXPECT_NEAR(adamw.m()[n / 2], m[n / 2], 1e-6 * std::fabs(m[n / 2]) + 1e-9);
  EXPECT_NEAR(adamw.v()[n / 3], v[n / 3], 1e-5 * std::fabs(v[n / 3]) + 1e-12);
  EXPECT_EQ(adamw.state().size(), 2 * n);
}

TEST(AdamWTest, MatchesNaiveLoopWithoutWeightDecay) {
  AdamWConfig c;
  c.set_weight_decay(0);
  ExpectMatchesNaive(c, /*clip=*/0, /*steps=*/6, /*grad_scale=*/1.0);
}

TEST(AdamWTest, MatchesNaiveLoopWithWeightDecayOnMatricesOnly) {
  AdamWConfig c;
  c.set_weight_decay(0.3);
  c.set_beta1(0.8);
  c.set_beta2(0.99);
  ExpectMatchesNaive(c, 0, 6, 1.0);
}

TEST(AdamWTest, MatchesNaiveLoopWithGlobalNormClipping) {
  AdamWConfig c;
  c.set_epsilon(1e-3);  // epsilon large enough that the clipping factor changes the update
  ExpectMatchesNaive(c, /*clip=*/0.5, 6, /*grad_scale=*/3.0);
}

TEST(AdamWTest, FirstStepIsSignTimesLearningRateAndNormScalesAreNotDecayed) {
  // Step 0, no decay: m_hat = g, v_hat = g^2, update = g / (|g| + eps) ~ sign(g).
  const ParamLayout layout(SmallDims());
  const int64_t n = layout.total_size();
  AdamWConfig c;
  c.set_epsilon(1e-12);
  c.set_weight_decay(0.5);
  AdamW adamw(c, 0, layout);
  std::vector<float> params(n, 1.0f), grads(n);
  FillNormal(grads.data(), n, 1.0, 3);
  adamw.Update(0, 0.1, params.data(), grads.data());
  const ParamInfo& norm = layout.Get("final_norm.scale");
  const ParamInfo& wq = layout.Get("layers.0.attn.wq");
  for (int64_t i = 0; i < norm.size; ++i) {
    const float g = grads[norm.offset + i];
    EXPECT_NEAR(params[norm.offset + i], 1.0 - 0.1 * (g > 0 ? 1 : -1), 1e-5);
  }
  for (int64_t i = 0; i < wq.size; ++i) {  // also decayed: 1 - lr * (sign + wd * 1)
    const float g = grads[wq.offset + i];
    EXPECT_NEAR(params[wq.offset + i], 1.0 - 0.1 * ((g > 0 ? 1 : -1) + 0.5), 1e-5);
  }
}

TEST(AdamWTest, ShardedExpertsUpdateLikeTheUnshardedOnes) {
  const ModelDims dims = SmallDims();
  const ParamLayout full(dims), shard(dims, {.first_expert = 2, .num_local_experts = 2});
  std::vector<float> pf(full.total_size()), gf(full.total_size());
  FillNormal(pf.data(), full.total_size(), 1.0, 5);
  // The shard: the shared parameters and experts 2..3, copied from the full buffers.
  std::vector<float> ps(shard.total_size()), gs(shard.total_size());
  AdamWConfig c;
  AdamW af(c, 0, full), as(c, 0, shard);
  auto copy_to_shard = [&](const std::vector<float>& from, std::vector<float>* to) {
    for (const ParamInfo& p : shard.params()) {
      const ParamInfo& q = full.Get(p.name);
      const int64_t skip = p.is_expert ? p.first_expert * (p.size / p.shape[0]) : 0;
      std::copy_n(from.begin() + q.offset + skip, p.size, to->begin() + p.offset);
    }
  };
  copy_to_shard(pf, &ps);
  for (int step = 0; step < 3; ++step) {
    FillNormal(gf.data(), full.total_size(), 1.0, 50 + step);
    copy_to_shard(gf, &gs);
    af.Update(step, 0.01, pf.data(), gf.data(), /*global_grad_norm=*/1.0);
    as.Update(step, 0.01, ps.data(), gs.data(), /*global_grad_norm=*/1.0);
  }
  std::vector<float> want(shard.total_size());
  copy_to_shard(pf, &want);
  EXPECT_EQ(0, std::memcmp(want.data(), ps.data(), ps.size() * sizeof(float)));
}

TEST(AdamWTest, FactoryPicksTheJobsOptimizer) {
  const ParamLayout layout(SmallDims());
  JobSpec spec;
  EXPECT_EQ(MakeOptimizer(spec, layout)->kind(), OPTIMIZER_ADAFACTOR);
  spec.mutable_train()->set_optimizer(OPTIMIZER_ADAMW);
  std::unique_ptr<Optimizer> o = MakeOptimizer(spec, layout);
  EXPECT_EQ(o->kind(), OPTIMIZER_ADAMW);
  EXPECT_EQ(o->state().size(), 2 * layout.total_size());
}

}  // namespace
}  // namespace openmoe
