#include "model/adafactor.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/gemm.h"
#include "gtest/gtest.h"
#include "model/params.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

using testing::FillNormal;

// d_model 128 gives factored matrices (embedding (256, 128), logits (128, 256), each expert's
// wi_0 (128, 128)), unfactored ones (wq (128, 32), router (128, 2), expert wi_1 (128, 64)) and
// vectors (norm scales), with two experts.
ModelDims SmallDims() {
  ModelDims d;
  d.vocab_size = d.padded_vocab_size = 256;
  d.num_layers = 1;
  d.d_model = 128;
  d.num_heads = 2;
  d.head_dim = 16;
  d.d_ff = d.expert_d_ff = 64;
  d.num_experts = 2;
  d.moe_interval = 1;
  d.extra_dense_ffn = false;
  d.ffn_form = FFN_OPENMOE;
  return d;
}

// Adafactor straight from the formulas, in double, written without looking at the optimized
// implementation: one matrix (or one expert's matrix, or a vector as a single row) at a time.
class ReferenceAdafactor {
 public:
  ReferenceAdafactor(const AdafactorConfig& config, const ParamLayout& layout) : config_(config) {
    for (const ParamInfo& p : layout.params()) {
      const int64_t experts = p.is_expert ? p.shape[0] : 1;
      const int64_t rows =
          p.shape.size() - (p.is_expert ? 1 : 0) == 2 ? p.shape[p.shape.size() - 2] : 1;
      const int64_t cols = p.shape.back();
      const bool factored = config.factored() && rows >= config.min_dim_size_to_factor() &&
                            cols >= config.min_dim_size_to_factor();
      for (int64_t e = 0; e < experts; ++e) {
        Matrix m;
        m.offset = p.offset + e * rows * cols;
        m.rows = rows;
        m.cols = cols;
        m.factored = factored;
        if (factored) {
          m.v_row.assign(rows, 0.0);
          m.v_col.assign(cols, 0.0);
        } else {
          m.v.assign(rows * cols, 0.0);
        }
        matrices_.push_back(std::move(m));
      }
    }
  }

  // Returns the parameters after one step from `params` with `grads`.
  std::vector<double> Step(int64_t step, double lr, const std::vector<float>& params,
                           const std::vector<float>& grads) {
    const double beta2 = 1.0 - std::pow(step + 1.0, -config_.decay_exponent());
    const double eps1 = config_.epsilon1();
    double norm = 0.0;
    for (float g : grads) norm += static_cast<double>(g) * g;
    norm = std::sqrt(norm);
    const double clip = config_.global_norm_clip();
    const double gscale = clip > 0 && norm > clip ? clip / norm : 1.0;
    std::vector<double> out(params.begin(), params.end());
    for (Matrix& m : matrices_) {
      const int64_t r = m.rows, c = m.cols, n = r * c;
      auto g = [&](int64_t i, int64_t j) { return gscale * grads[m.offset + i * c + j]; };
      std::vector<double> u(n);
      if (m.factored) {
        for (int64_t i = 0; i < r; ++i) {
          double mean = 0.0;
          for (int64_t j = 0; j < c; ++j) mean += (g(i, j) * g(i, j) + eps1) / c;
          m.v_row[i] = beta2 * m.v_row[i] + (1 - beta2) * mean;
        }
        for (int64_t j = 0; j < c; ++j) {
          double mean = 0.0;
          for (int64_t i = 0; i < r; ++i) mean += (g(i, j) * g(i, j) + eps1) / r;
          m.v_col[j] = beta2 * m.v_col[j] + (1 - beta2) * mean;
        }
        double row_mean = 0.0;
        for (double v : m.v_row) row_mean += v / r;
        for (int64_t i = 0; i < r; ++i)
          for (int64_t j = 0; j < c; ++j)
            u[i * c + j] = g(i, j) / std::sqrt(m.v_row[i] / row_mean * m.v_col[j]);
      } else {
        for (int64_t i = 0; i < r; ++i)
          for (int64_t j = 0; j < c; ++j) {
            double& v = m.v[i * c + j];
            v = beta2 * v + (1 - beta2) * (g(i, j) * g(i, j) + eps1);
            u[i * c + j] = g(i, j) / std::sqrt(v);
          }
      }
      double u_ms = 0.0, p_ms = 0.0;
      for (int64_t k = 0; k < n; ++k) {
        u_ms += u[k] * u[k] / n;
        p_ms += static_cast<double>(params[m.offset + k]) * params[m.offset + k] / n;
      }
      double denom = 1.0;
      if (config_.clipping_threshold() > 0) {
        denom = std::max(1.0, std::sqrt(u_ms) / config_.clipping_threshold());
        ++(denom > 1.0 ? clipped_ : unclipped_);
      }
      const double pscale = config_.multiply_by_parameter_scale()
                                ? std::max(std::sqrt(p_ms), config_.epsilon2())
                                : 1.0;
      for (int64_t k = 0; k < n; ++k) out[m.offset + k] -= lr * pscale * u[k] / denom;
    }
    return out;
  }

  // The state in the documented flat order: v_row then v_col per factored matrix, else v.
  std::vector<double> State() const {
    std::vector<double> s;
    for (const Matrix& m : matrices_) {
      s.insert(s.end(), m.v_row.begin(), m.v_row.end());
      s.insert(s.end(), m.v_col.begin(), m.v_col.end());
      s.insert(s.end(), m.v.begin(), m.v.end());
    }
    return s;
  }
  int clipped() const { return clipped_; }
  int unclipped() const { return unclipped_; }

 private:
  struct Matrix {
    int64_t offset = 0, rows = 0, cols = 0;
    bool factored = false;
    std::vector<double> v_row, v_col, v;
  };
  AdafactorConfig config_;
  std::vector<Matrix> matrices_;
  int clipped_ = 0, unclipped_ = 0;
};

// Gradients for step `step`: N(0, 1) times a per-tensor growth (x4 per step on every other tensor,
// /4 on the rest, so some updates outgrow the lagging second moments and get clipped and some do
// not) times a per-row factor, so the factored statistics are not flat.
std::vector<float> MakeGrads(const ParamLayout& layout, int step, uint64_t seed = 11) {
  std::vector<float> g(layout.total_size());
  FillNormal(g.data(), layout.total_size(), 1.0, seed + step);
  for (size_t t = 0; t < layout.params().size(); ++t) {
    const ParamInfo& p = layout.params()[t];
    const float growth = static_cast<float>(std::pow(t % 2 ? 4.0 : 0.25, step));
    const int64_t cols = p.shape.back();
    for (int64_t k = 0; k < p.size; ++k) g[p.offset + k] *= growth * (1 + (k / cols) % 3);
  }
  return g;
}

std::vector<float> MakeParams(const ParamLayout& layout) {
  std::vector<float> p(layout.total_size());
  FillNormal(p.data(), layout.total_size(), 0.05, 5);
  return p;
}

float Sign(float x) { return x > 0 ? 1.0f : -1.0f; }

TEST(AdafactorTest, SlicesFollowTheLayout) {
  const ParamLayout layout(SmallDims());
  const Adafactor opt(AdafactorConfig(), layout);
  // 13 tensors, the 3 expert ones split in two.
  ASSERT_EQ(opt.slices().size(), 16u);
  int64_t state_size = 0;
  for (const Adafactor::Slice& s : opt.slices()) {
    EXPECT_EQ(s.state_offset, state_size);
    state_size += s.factored ? s.rows + s.cols : s.rows * s.cols;
  }
  EXPECT_EQ(opt.state().size(), state_size);
  auto slices_of = [&](const std::string& name) {
    const ParamInfo& p = layout.Get(name);
    std::vector<Adafactor::Slice> out;
    for (const Adafactor::Slice& s : opt.slices())
      if (s.param_offset >= p.offset && s.param_offset < p.offset + p.size) out.push_back(s);
    return out;
  };
  for (const char* name : {"embedding", "logits"}) {
    ASSERT_EQ(slices_of(name).size(), 1u) << name;
    EXPECT_TRUE(slices_of(name)[0].factored) << name;
  }
  const auto wi0 = slices_of("layers.0.moe.experts.wi_0");
  ASSERT_EQ(wi0.size(), 2u);
  for (int e = 0; e < 2; ++e) {
    EXPECT_TRUE(wi0[e].factored);
    EXPECT_EQ(wi0[e].rows, 128);
    EXPECT_EQ(wi0[e].cols, 128);
    EXPECT_EQ(wi0[e].param_offset, layout.Get("layers.0.moe.experts.wi_0").offset + e * 128 * 128);
  }
  for (const char* name : {"layers.0.attn.wq", "layers.0.moe.router", "layers.0.moe.experts.wi_1"})
    for (const auto& s : slices_of(name)) EXPECT_FALSE(s.factored) << name;
  const auto norm = slices_of("final_norm.scale");
  ASSERT_EQ(norm.size(), 1u);
  EXPECT_EQ(norm[0].rows, 1);
  EXPECT_EQ(norm[0].cols, 128);
  EXPECT_FALSE(norm[0].factored);

  AdafactorConfig unfactored;
  unfactored.set_factored(false);
  const Adafactor unfactored_opt(unfactored, layout);
  for (const auto& s : unfactored_opt.slices()) EXPECT_FALSE(s.factored);
}

TEST(AdafactorTest, MatchesDoublePrecisionReferenceOverThreeSteps) {
  const ParamLayout layout(SmallDims());
  const AdafactorConfig config;  // the defaults are T5X's
  Adafactor opt(config, layout);
  ReferenceAdafactor ref(config, layout);
  std::vector<float> params = MakeParams(layout);
  for (int step = 0; step < 3; ++step) {
    const std::vector<float> grads = MakeGrads(layout, step);
    const std::vector<float> before = params;
    const double lr = 0.01 * (step + 1);
    const std::vector<double> expected = ref.Step(step, lr, before, grads);
    opt.Update(step, lr, params.data(), grads.data());
    int checked = 0;
    for (const ParamInfo& p : layout.params()) {
      for (int64_t k = p.offset; k < p.offset + p.size; ++k, ++checked) {
        const double delta = expected[k] - before[k];
        ASSERT_NEAR(params[k], expected[k], 1e-4 * std::fabs(delta) + 2.5e-7 * std::fabs(before[k]))
            << p.name << " element " << k - p.offset << " step " << step;
      }
    }
    EXPECT_GT(checked, 100000);
    const std::vector<double> state = ref.State();
    ASSERT_EQ(static_cast<int64_t>(state.size()), opt.state().size());
    for (size_t k = 0; k < state.size(); ++k)
      ASSERT_NEAR(opt.state()[k], state[k], 1e-6 * state[k]) << "state " << k << " step " << step;
  }
  // The case mix exercised both branches of the update clipping.
  EXPECT_GT(ref.clipped(), 0);
  EXPECT_GT(ref.unclipped(), 0);
}

// The update's passes run on the GEMM threads with every sum in a fixed order: one thread and two
// give the same parameters and state bit for bit (the vocabulary matrices, 128 x 256, are split
// into several row and column ranges).
TEST(AdafactorTest, SameBitsOnOneAndTwoThreads) {
  const ParamLayout layout(SmallDims());
  const AdafactorConfig config;
  std::vector<std::vector<float>> params, states;
  const int saved = GemmThreads();
  for (const int threads : {1, 2}) {
    SetGemmThreads(threads);
    Adafactor opt(config, layout);
    std::vector<float> p = MakeParams(layout);
    for (int step = 0; step < 3; ++step) {
      const std::vector<float> grads = MakeGrads(layout, step);
      opt.Update(step, 0.01, p.data(), grads.data());
    }
    params.push_back(p);
    states.emplace_back(opt.state().data(), opt.state().data() + opt.state().size());
  }
  SetGemmThreads(saved);
  EXPECT_EQ(params[0], params[1]);
  EXPECT_EQ(states[0], states[1]);
}

TEST(AdafactorTest, FirstStepUsesSquaredGradientAndSignUpdate) {
  // t = 0 gives beta2 = 0: v is this step's g^2 + eps1, and an unfactored u = g / |g| = sign(g).
  const ParamLayout layout(SmallDims());
  AdafactorConfig config;
  config.set_clipping_threshold(0);
  config.set_multiply_by_parameter_scale(false);
  Adafactor opt(config, layout);
  std::vector<float> params = MakeParams(layout);
  const std::vector<float> before = params;
  const std::vector<float> grads = MakeGrads(layout, 0);
  opt.Update(0, 0.5, params.data(), grads.data());
  const float* state = opt.state().data();
  for (const Adafactor::Slice& s : opt.slices()) {
    const float* g = grads.data() + s.param_offset;
    if (s.factored) {
      for (int64_t i = 0; i < s.rows; ++i) {
        double mean = 0.0;
        for (int64_t j = 0; j < s.cols; ++j)
          mean += static_cast<double>(g[i * s.cols + j]) * g[i * s.cols + j];
        mean = mean / s.cols + 1e-30;
        EXPECT_NEAR(state[s.state_offset + i], mean, 1e-6 * mean) << "v_row " << i;
      }
      for (int64_t j = 0; j < s.cols; ++j) {
        double mean = 0.0;
        for (int64_t i = 0; i < s.rows; ++i)
          mean += static_cast<double>(g[i * s.cols + j]) * g[i * s.cols + j];
        mean = mean / s.rows + 1e-30;
        EXPECT_NEAR(state[s.state_offset + s.rows + j], mean, 1e-6 * mean) << "v_col " << j;
      }
      continue;
    }
    for (int64_t k = 0; k < s.rows * s.cols; ++k) {
      // g^2 + eps1 rounded once, as the optimizer computes it.
      ASSERT_EQ(state[s.state_offset + k], std::fma(g[k], g[k], 1e-30f));
      ASSERT_EQ(params[s.param_offset + k], before[s.param_offset + k] - 0.5f * Sign(g[k]));
    }
  }
}

TEST(AdafactorTest, ClipsUpdateRmsToThreshold) {
  // At t = 0 an unfactored update is sign(g), of RMS exactly 1.
  const ParamLayout layout(SmallDims());
  const std::vector<float> grads = MakeGrads(layout, 0);
  for (const double threshold : {0.25, 2.0}) {
    AdafactorConfig config;
    config.set_clipping_threshold(threshold);
    config.set_multiply_by_parameter_scale(false);
    Adafactor opt(config, layout);
    std::vector<float> params = MakeParams(layout);
    const std::vector<float> before = params;
    opt.Update(0, 1.0, params.data(), grads.data());
    const float moved = static_cast<float>(std::min(threshold, 1.0));
    for (const Adafactor::Slice& s : opt.slices()) {
      const int64_t n = s.rows * s.cols;
      double ms = 0.0;
      for (int64_t k = s.param_offset; k < s.param_offset + n; ++k) {
        if (!s.factored) {
          ASSERT_FLOAT_EQ(params[k], before[k] - moved * Sign(grads[k])) << threshold;
        }
        ms += std::pow(static_cast<double>(before[k]) - params[k], 2) / n;
      }
      // A factored update at t = 0 has RMS near 1 too: clipped to exactly the threshold, or not.
      if (s.factored) {
        EXPECT_NEAR(std::sqrt(ms), std::min(threshold, 1.0), 0.1) << threshold;
        if (threshold < 1) {
          EXPECT_NEAR(std::sqrt(ms), threshold, 1e-5);
        }
      }
    }
  }
}

TEST(AdafactorTest, ParameterScaleIsRmsFlooredAtEpsilon2) {
  const ParamLayout layout(SmallDims());
  AdafactorConfig config;
  config.set_clipping_threshold(0);
  const std::vector<float> grads = MakeGrads(layout, 0);
  const double lr = 0.1;
  for (const float init : {0.0f, 3.0f}) {
    Adafactor opt(config, layout);
    std::vector<float> params(layout.total_size(), init);
    opt.Update(0, lr, params.data(), grads.data());
    // A zero parameter still moves, by lr * epsilon2 * u; a constant one by lr * |init| * u.
    const float step = static_cast<float>(lr * std::max(1e-3, static_cast<double>(init)));
    for (const Adafactor::Slice& s : opt.slices()) {
      if (s.factored) continue;
      for (int64_t k = s.param_offset; k < s.param_offset + s.rows * s.cols; ++k)
        ASSERT_FLOAT_EQ(params[k], init - step * Sign(grads[k])) << init;
    }
  }
}

TEST(AdafactorTest, ExpertsAreFactoredClippedAndScaledIndependently) {
  // Expert 1 gets 1000x the gradients and 100x the parameters. Sharing any statistic with expert
  // 0 (second-moment factors, clipping RMS, parameter scale) would change expert 0's update.
  const ParamLayout layout(SmallDims());
  const AdafactorConfig config;
  Adafactor base_opt(config, layout), scaled_opt(config, layout);
  std::vector<float> base = MakeParams(layout), scaled = base;
  std::vector<std::pair<int64_t, int64_t>> expert1;  // [begin, end) of expert 1 in each tensor
  for (const ParamInfo& p : layout.params())
    if (p.is_expert) expert1.push_back({p.offset + p.size / 2, p.offset + p.size});
  auto in_expert1 = [&](int64_t k) {
    for (auto [b, e] : expert1)
      if (k >= b && k < e) return true;
    return false;
  };
  for (int64_t k = 0; k < layout.total_size(); ++k)
    if (in_expert1(k)) scaled[k] *= 100.0f;
  for (int step = 0; step < 3; ++step) {
    const std::vector<float> grads = MakeGrads(layout, step);
    std::vector<float> scaled_grads = grads;
    for (int64_t k = 0; k < layout.total_size(); ++k)
      if (in_expert1(k)) scaled_grads[k] *= 1000.0f;
    const std::vector<float> base_before = base, scaled_before = scaled;
    base_opt.Update(step, 0.01, base.data(), grads.data());
    scaled_opt.Update(step, 0.01, scaled.data(), scaled_grads.data());
    int64_t expert1_size = 0, expert1_moved = 0;
    for (int64_t k = 0; k < layout.total_size(); ++k) {
      if (!in_expert1(k)) {
        ASSERT_EQ(scaled[k], base[k]) << "element " << k << " step " << step;
      } else {
        // u ignores the gradient's scale; the step follows the parameter's.
        const double base_delta = base[k] - base_before[k];
        ++expert1_size;
        expert1_moved += base_delta != 0.0;
        ASSERT_NEAR(scaled[k] - scaled_before[k], 100.0 * base_delta,
                    1e-3 * std::fabs(100.0 * base_delta) + 1e-6 * std::fabs(scaled_before[k]))
            << "element " << k << " step " << step;
      }
    }
    // Most of expert 1 moves (a tiny u can round away against the parameter).
    EXPECT_GT(expert1_moved, expert1_size * 9 / 10) << "step " << step;
  }
}

TEST(AdafactorTest, GlobalNormClipScalesAllGradients) {
  // Clipping at tau must equal feeding g * tau / |g| unclipped. Two steps, because a step-0 update
  // does not depend on the gradient's scale (only the state does); step 1 weighs g against the
  // state left by step 0.
  const ParamLayout layout(SmallDims());
  const std::vector<std::vector<float>> grads = {MakeGrads(layout, 0), MakeGrads(layout, 1)};
  std::vector<double> norms;
  for (const auto& g : grads) {
    double sq = 0.0;
    for (float x : g) sq += static_cast<double>(x) * x;
    norms.push_back(std::sqrt(sq));
  }
  const double tau = std::min(norms[0], norms[1]) / 8;
  AdafactorConfig clipped, plain;
  clipped.set_global_norm_clip(tau);
  Adafactor a(clipped, layout), b(plain, layout);
  std::vector<float> pa = MakeParams(layout), pb = pa;
  for (int step = 0; step < 2; ++step) {
    std::vector<float> scaled = grads[step];
    for (float& g : scaled) g = static_cast<float>(g * (tau / norms[step]));
    a.Update(step, 0.01, pa.data(), grads[step].data());
    b.Update(step, 0.01, pb.data(), scaled.data());
  }
  for (int64_t k = 0; k < a.state().size(); ++k)
    ASSERT_NEAR(a.state()[k], b.state()[k], 1e-5 * b.state()[k]) << "state " << k;
  for (int64_t k = 0; k < layout.total_size(); ++k) ASSERT_NEAR(pa[k], pb[k], 1e-7) << k;

  // A threshold above the norm changes nothing.
  AdafactorConfig loose;
  loose.set_global_norm_clip(norms[0] * 2);
  Adafactor c(loose, layout), d(plain, layout);
  std::vector<float> pc = MakeParams(layout), pd = pc;
  c.Update(0, 0.01, pc.data(), grads[0].data());
  d.Update(0, 0.01, pd.data(), grads[0].data());
  EXPECT_EQ(pc, pd);
}

}  // namespace
}  // namespace openmoe
