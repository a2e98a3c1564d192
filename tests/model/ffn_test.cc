#include "model/ffn.h"

#include <cmath>
#include <vector>

#include "core/bf16.h"
#include "core/gemm.h"
#include "core/kernels.h"
#include "core/onednn_gemm.h"
#include "gtest/gtest.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

using testing::ExpectGradientMatches;
using testing::FillNormal;

double SiluRef(double v) { return v / (1.0 + std::exp(-v)); }

class FfnTest : public ::testing::TestWithParam<FfnForm> {
 protected:
  FfnTest()
      : dims_{.tokens = 5, .d_model = 6, .d_ff = 4, .form = GetParam()},
        x_(dims_.tokens * dims_.d_model),
        wi0_(dims_.d_model * dims_.Wi0Width()),
        wi1_(dims_.d_model * dims_.d_ff),
        wo_(dims_.d_ff * dims_.d_model),
        y_(x_.size()) {
    // Weights of std 1/sqrt(fan_in) keep the pre-activations O(1), where silu is curved.
    FillNormal(x_.data(), x_.size(), 1.0, 1);
    FillNormal(wi0_.data(), wi0_.size(), 1.0 / std::sqrt(6.0), 2);
    FillNormal(wi1_.data(), wi1_.size(), 1.0 / std::sqrt(6.0), 3);
    FillNormal(wo_.data(), wo_.size(), 1.0 / std::sqrt(4.0), 4);
  }
  FfnWeights Weights() const { return {wi0_.data(), wi1_.data(), wo_.data()}; }

  // Naive double-precision loops straight from the definitions in ffn.h.
  std::vector<double> Reference() const {
    const int64_t t = dims_.tokens, d = dims_.d_model, f = dims_.d_ff, w0 = dims_.Wi0Width();
    std::vector<double> y(t * d, 0.0);
    for (int64_t i = 0; i < t; ++i) {
      std::vector<double> g0(w0, 0.0), g1(f, 0.0);
      for (int64_t e = 0; e < d; ++e) {
        for (int64_t c = 0; c < w0; ++c) g0[c] += double{x_[i * d + e]} * wi0_[e * w0 + c];
        for (int64_t c = 0; c < f; ++c) g1[c] += double{x_[i * d + e]} * wi1_[e * f + c];
      }
      for (int64_t c = 0; c < f; ++c) {
        const double h =
            dims_.form == FFN_OPENMOE ? g0[c] * SiluRef(g0[f + c]) * g1[c] : SiluRef(g0[c]) * g1[c];
        for (int64_t e = 0; e < d; ++e) y[i * d + e] += h * wo_[c * d + e];
      }
    }
    return y;
  }

  FfnDims dims_;
  std::vector<float> x_, wi0_, wi1_, wo_, y_;
  FfnCache cache_;
};

TEST_P(FfnTest, ForwardMatchesNaiveLoops) {
  FfnForward(dims_, Weights(), x_.data(), &cache_, y_.data());
  const std::vector<double> ref = Reference();
  for (size_t i = 0; i < y_.size(); ++i) EXPECT_NEAR(y_[i], ref[i], 1e-5) << i;
}

TEST_P(FfnTest, ForwardAccumulateAddsToOutput) {
  std::vector<float> y(y_.size(), 2.0f);
  FfnForward(dims_, Weights(), x_.data(), &cache_, y.data(), /*accumulate=*/true);
  const std::vector<double> ref = Reference();
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i] + 2.0, 1e-5) << i;
}

TEST_P(FfnTest, GradientsMatchFiniteDifferences) {
  std::vector<float> r(y_.size());
  FillNormal(r.data(), r.size(), 1.0, 5);
  auto loss = [&] {  // L = sum(y * r), so dL/dy = r
    FfnForward(dims_, Weights(), x_.data(), &cache_, y_.data());
    double l = 0.0;
    for (size_t i = 0; i < y_.size(); ++i) l += double{y_[i]} * r[i];
    return l;
  };
  loss();
  // Accumulators start at 1 so the check also proves the backward adds rather than overwrites.
  std::vector<float> dx(x_.size(), 1.0f), dwi0(wi0_.size(), 1.0f), dwi1(wi1_.size(), 1.0f),
      dwo(wo_.size(), 1.0f);
  FfnBackward(dims_, Weights(), x_.data(), &cache_, r.data(),
              {dwi0.data(), dwi1.data(), dwo.data()}, dx.data());
  for (auto* g : {&dx, &dwi0, &dwi1, &dwo})
    for (float& v : *g) v -= 1.0f;
  ExpectGradientMatches("ffn dx", loss, x_.data(), x_.size(), dx.data());
  ExpectGradientMatches("ffn dwi_0", loss, wi0_.data(), wi0_.size(), dwi0.data());
  ExpectGradientMatches("ffn dwi_1", loss, wi1_.data(), wi1_.size(), dwi1.data());
  ExpectGradientMatches("ffn dwo", loss, wo_.data(), wo_.size(), dwo.data());
}

// BF16 holds h and the gate gradients, which only feed GEMMs, as bf16 (core/gemm_rows.h). The
// same FFN through float buffers only, rounded to bf16 where they are made and multiplied by
// Gemm(kBf16) on floats (the route before they were held as bf16), gives the same output, cache
// and gradients bit for bit, on each bf16 backend this CPU has.
TEST_P(FfnTest, Bf16GemmOnlyTemporariesAsBf16GiveTheFloatRoutesBits) {
  const FfnDims dims{.tokens = 67,
                     .d_model = 40,
                     .d_ff = 36,
                     .form = GetParam(),
                     .precision = GemmPrecision::kBf16};
  const int64_t t = dims.tokens, d = dims.d_model, f = dims.d_ff, w0 = dims.Wi0Width();
  std::vector<float> x(t * d), wi0(d * w0), wi1(d * f), wo(f * d), dy(t * d);
  FillNormal(x.data(), x.size(), 1.0, 11);
  FillNormal(wi0.data(), wi0.size(), 1.0 / std::sqrt(40.0), 12);
  FillNormal(wi1.data(), wi1.size(), 1.0 / std::sqrt(40.0), 13);
  FillNormal(wo.data(), wo.size(), 1.0 / 6.0, 14);
  FillNormal(dy.data(), dy.size(), 1.0, 15);
  const GemmPrecision bf = GemmPrecision::kBf16;
  const GemmBackend saved = ActiveGemmBackend(bf);
  for (const GemmBackend backend : {GemmBackend::kOpenBlas, GemmBackend::kOneDnn}) {
    if (backend == GemmBackend::kOneDnn && !OneDnnGemmAvailable(bf)) continue;
    SetGemmBackend(bf, backend);
    // The float route.
    std::vector<float> g0(t * w0), g1(t * f), h(t * f), y(t * d), dh(t * f), dg0(t * w0),
        dg1(t * f), dx(t * d, 0.5f), dwi0(d * w0, 0.5f), dwi1(d * f, 0.5f), dwo(f * d, 0.5f);
    Gemm(bf, {}, t, w0, d, x.data(), wi0.data(), g0.data());
    Gemm(bf, {}, t, f, d, x.data(), wi1.data(), g1.data());
    for (int64_t i = 0; i < t; ++i) {
      for (int64_t j = 0; j < f; ++j) {
        const float* r0 = &g0[i * w0];
        const float c = g1[i * f + j];
        h[i * f + j] =
            RoundToBf16(dims.form == FFN_OPENMOE ? r0[j] * Silu(r0[f + j]) * c : Silu(r0[j]) * c);
      }
    }
    Gemm(bf, {}, t, d, f, h.data(), wo.data(), y.data());
    Gemm(bf, {.transpose_a = true, .beta = 1.0f}, f, d, t, h.data(), dy.data(), dwo.data());
    Gemm(bf, {.transpose_b = true}, t, f, d, dy.data(), wo.data(), dh.data());
    for (int64_t i = 0; i < t; ++i) {
      for (int64_t j = 0; j < f; ++j) {
        const float* r0 = &g0[i * w0];
        const float c = g1[i * f + j], up = dh[i * f + j];
        if (dims.form == FFN_OPENMOE) {
          const float a = r0[j], b = r0[f + j], sb = Silu(b);
          dg0[i * w0 + j] = RoundToBf16(up * sb * c);
          dg0[i * w0 + f + j] = RoundToBf16(up * a * c * SiluGrad(b));
          dg1[i * f + j] = RoundToBf16(up * a * sb);
        } else {
          dg0[i * w0 + j] = RoundToBf16(up * c * SiluGrad(r0[j]));
          dg1[i * f + j] = RoundToBf16(up * Silu(r0[j]));
        }
      }
    }
    Gemm(bf, {.transpose_a = true, .beta = 1.0f}, d, w0, t, x.data(), dg0.data(), dwi0.data());
    Gemm(bf, {.transpose_a = true, .beta = 1.0f}, d, f, t, x.data(), dg1.data(), dwi1.data());
    Gemm(bf, {.transpose_b = true, .beta = 1.0f}, t, d, w0, dg0.data(), wi0.data(), dx.data());
    Gemm(bf, {.transpose_b = true, .beta = 1.0f}, t, d, f, dg1.data(), wi1.data(), dx.data());
    // The FFN itself.
    FfnCache cache;
    std::vector<float> got_y(t * d), got_dx(t * d, 0.5f), got_dwi0(d * w0, 0.5f),
        got_dwi1(d * f, 0.5f), got_dwo(f * d, 0.5f);
    FfnForward(dims, {wi0.data(), wi1.data(), wo.data()}, x.data(), &cache, got_y.data());
    FfnBackward(dims, {wi0.data(), wi1.data(), wo.data()}, x.data(), &cache, dy.data(),
                {got_dwi0.data(), got_dwi1.data(), got_dwo.data()}, got_dx.data());
    const std::string where = backend == GemmBackend::kOneDnn ? "oneDNN" : "sgemm fallback";
    EXPECT_EQ(std::vector<float>(cache.g0.data(), cache.g0.data() + t * w0), g0) << where;
    EXPECT_EQ(std::vector<float>(cache.g1.data(), cache.g1.data() + t * f), g1) << where;
    EXPECT_EQ(got_y, y) << where;
    EXPECT_EQ(got_dx, dx) << where;
    EXPECT_EQ(got_dwi0, dwi0) << where;
    EXPECT_EQ(got_dwi1, dwi1) << where;
    EXPECT_EQ(got_dwo, dwo) << where;
  }
  SetGemmBackend(bf, saved);
}

INSTANTIATE_TEST_SUITE_P(FfnForms, FfnTest, ::testing::Values(FFN_OPENMOE, FFN_SWIGLU),
                         [](const ::testing::TestParamInfo<FfnForm>& info) {
                           return info.param == FFN_OPENMOE ? std::string("OpenMoe")
                                                            : std::string("SwiGlu");
                         });

}  // namespace
}  // namespace openmoe
