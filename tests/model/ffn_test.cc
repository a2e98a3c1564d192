#include "model/ffn.h"

#include <cmath>
#include <vector>

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

INSTANTIATE_TEST_SUITE_P(FfnForms, FfnTest, ::testing::Values(FFN_OPENMOE, FFN_SWIGLU),
                         [](const ::testing::TestParamInfo<FfnForm>& info) {
                           return info.param == FFN_OPENMOE ? std::string("OpenMoe")
                                                            : std::string("SwiGlu");
                         });

}  // namespace
}  // namespace openmoe
