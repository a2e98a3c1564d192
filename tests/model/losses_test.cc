#include "model/losses.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

using testing::ExpectGradientMatches;
using testing::FillNormal;

TEST(LmLossTest, UniformLogitsGiveLogVocab) {
  // V = 1003 also runs the loops' remainder paths.
  const int64_t t = 3, v = 1003;
  const std::vector<int32_t> targets = {0, 500, 1002};
  const std::vector<float> weights = {1, 1, 1};
  const double log_v = std::log(static_cast<double>(v));
  std::vector<float> dlogits(t * v);
  {
    const std::vector<float> logits(t * v, 0.0f);
    const LmLossSums sums = LmLossForwardBackward(logits.data(), targets.data(), weights.data(), t,
                                                  v, 0.0, 1.0, dlogits.data());
    EXPECT_NEAR(sums.cross_entropy, 3 * log_v, 1e-6);
    EXPECT_NEAR(sums.z_loss, 3 * log_v * log_v, 1e-6);
    EXPECT_EQ(sums.weight, 3.0);
    EXPECT_NEAR(dlogits[0], 1.0 / v - 1.0, 1e-7);
    EXPECT_NEAR(dlogits[1], 1.0 / v, 1e-9);
  }
  // A shift leaves the cross-entropy alone but not log Z.
  const std::vector<float> logits(t * v, 2.5f);
  const LmLossSums sums = LmLossForwardBackward(logits.data(), targets.data(), weights.data(), t, v,
                                                0.0, 1.0, dlogits.data());
  EXPECT_NEAR(sums.cross_entropy, 3 * log_v, 1e-6);
  EXPECT_NEAR(sums.z_loss, 3 * (2.5 + log_v) * (2.5 + log_v), 1e-5);
}

TEST(LmLossTest, HandComputedTwoByThree) {
  // Row 0: e^x = (1, 2, 3), Z = 6, target 1 (p = 1/3), weight 1.
  // Row 1: e^x = (1, 1, 2), Z = 4, target 2 (p = 1/2, also the argmax), weight 1/2.
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f),
                                     0.0f, 0.0f,           std::log(2.0f)};
  const std::vector<int32_t> targets = {1, 2};
  const std::vector<float> weights = {1.0f, 0.5f};
  const double z_weight = 0.1, normalizer = 0.5;
  std::vector<float> d(6);
  const LmLossSums sums = LmLossForwardBackward(logits.data(), targets.data(), weights.data(), 2, 3,
                                                z_weight, normalizer, d.data());
  const double ln2 = std::log(2.0), ln3 = std::log(3.0), ln4 = std::log(4.0), ln6 = std::log(6.0);
  EXPECT_NEAR(sums.cross_entropy, ln3 + 0.5 * ln2, 1e-6);
  EXPECT_NEAR(sums.z_loss, ln6 * ln6 + 0.5 * ln4 * ln4, 1e-6);
  EXPECT_EQ(sums.weight, 1.5);
  EXPECT_EQ(sums.correct, 1);
  // d = normalizer * w * ((1 + 2 z_weight lse) p - onehot).
  const double k0 = 0.5 * (1 + 0.2 * ln6), k1 = 0.25 * (1 + 0.2 * ln4);
  const std::vector<double> expected = {k0 / 6, k0 * 2 / 6 - 0.5, k0 * 3 / 6,
                                        k1 / 4, k1 / 4,           k1 / 2 - 0.25};
  for (int j = 0; j < 6; ++j) EXPECT_NEAR(d[j], expected[j], 1e-6) << j;
}

TEST(LmLossTest, CorrectCountsTheFirstArgmax) {
  // Ties go to the lowest index, as argmax does.
  const std::vector<float> logits = {1, 1, 0, 1, 1, 0};
  const std::vector<int32_t> targets = {0, 1};
  const std::vector<float> weights = {1, 1};
  std::vector<float> d(6);
  const LmLossSums sums =
      LmLossForwardBackward(logits.data(), targets.data(), weights.data(), 2, 3, 0, 1, d.data());
  EXPECT_EQ(sums.correct, 1);
}

TEST(LmLossTest, ZeroWeightRowsContributeNothing) {
  const int64_t v = 19;
  std::vector<float> real(2 * v);
  FillNormal(real.data(), 2 * v, 2.0, 3);
  const std::vector<int32_t> real_targets = {4, 11};
  const std::vector<float> real_weights = {1.0f, 0.5f};
  // The same two rows with two weight-0 rows interleaved, one of them NaN, one with its argmax on
  // its target: neither may reach the sums, the count or the other rows.
  std::vector<float> mixed(4 * v, std::numeric_limits<float>::quiet_NaN());
  std::copy(real.begin(), real.begin() + v, mixed.begin());
  std::fill(mixed.begin() + 2 * v, mixed.begin() + 3 * v, 0.0f);
  mixed[2 * v + 7] = 1e30f;
  std::copy(real.begin() + v, real.end(), mixed.begin() + 3 * v);
  const std::vector<int32_t> mixed_targets = {4, 0, 7, 11};
  const std::vector<float> mixed_weights = {1.0f, 0.0f, 0.0f, 0.5f};

  std::vector<float> d_real(2 * v), d_mixed(4 * v, 5.0f);
  const LmLossSums a = LmLossForwardBackward(real.data(), real_targets.data(), real_weights.data(),
                                             2, v, 1e-2, 0.3, d_real.data());
  const LmLossSums b = LmLossForwardBackward(mixed.data(), mixed_targets.data(),
                                             mixed_weights.data(), 4, v, 1e-2, 0.3, d_mixed.data());
  EXPECT_EQ(a.cross_entropy, b.cross_entropy);
  EXPECT_EQ(a.z_loss, b.z_loss);
  EXPECT_EQ(a.weight, b.weight);
  EXPECT_EQ(a.correct, b.correct);
  for (int64_t j = 0; j < v; ++j) {
    EXPECT_EQ(d_mixed[j], d_real[j]);
    EXPECT_EQ(d_mixed[v + j], 0.0f);
    EXPECT_EQ(d_mixed[2 * v + j], 0.0f);
    EXPECT_EQ(d_mixed[3 * v + j], d_real[v + j]);
  }
}

TEST(LmLossTest, GradientMatchesFiniteDifferences) {
  const int64_t t = 5, v = 37;
  std::vector<float> logits(t * v), d(t * v), scratch(t * v);
  FillNormal(logits.data(), t * v, 2.0, 9);
  const std::vector<int32_t> targets = {3, 36, 0, 17, 17};
  const std::vector<float> weights = {1.0f, 0.5f, 0.0f, 2.0f, 1.0f};
  const double z_weight = 0.1;  // large, so a wrong z-loss gradient shows
  const double normalizer = 1.0 / 4.5;
  auto loss = [&] {
    const LmLossSums s = LmLossForwardBackward(logits.data(), targets.data(), weights.data(), t, v,
                                               z_weight, normalizer, scratch.data());
    return normalizer * (s.cross_entropy + z_weight * s.z_loss);
  };
  LmLossForwardBackward(logits.data(), targets.data(), weights.data(), t, v, z_weight, normalizer,
                        d.data());
  ExpectGradientMatches("lm loss dlogits", loss, logits.data(), t * v, d.data(),
                        {.coords = static_cast<int>(t * v)});
}

TEST(LmLossTest, MatchesDoublePrecisionReferenceOnWideLogits) {
  // Logits N(0, 5^2) put x - max anywhere in [-50, 0], so every range of the exponential is used;
  // the reference uses std::exp in double.
  const int64_t t = 4, v = 4099;
  std::vector<float> logits(t * v), d(t * v);
  FillNormal(logits.data(), t * v, 5.0, 21);
  const std::vector<int32_t> targets = {0, 17, 4098, 2000};
  const std::vector<float> weights = {1, 0.5f, 2, 1};
  const double z_weight = 1e-3, normalizer = 0.25;
  const LmLossSums sums = LmLossForwardBackward(logits.data(), targets.data(), weights.data(), t, v,
                                                z_weight, normalizer, d.data());
  double ce = 0, z = 0;
  for (int64_t r = 0; r < t; ++r) {
    const float* x = logits.data() + r * v;
    const double max = *std::max_element(x, x + v);
    double sum = 0;
    for (int64_t j = 0; j < v; ++j) sum += std::exp(x[j] - max);
    const double lse = max + std::log(sum);
    ce += weights[r] * (lse - x[targets[r]]);
    z += weights[r] * lse * lse;
    const double c = normalizer * weights[r];
    for (int64_t j = 0; j < v; ++j) {
      const double expected =
          c * ((1 + 2 * z_weight * lse) * std::exp(x[j] - lse) - (j == targets[r]));
      // x - max is rounded to float, by up to 2^-24 |x - max|; e^(x - max) inherits that.
      const double rtol = 1e-6 + 6e-8 * (max - x[j]);
      ASSERT_NEAR(d[r * v + j], expected, rtol * std::fabs(expected) + 1e-30) << r << " " << j;
    }
  }
  EXPECT_NEAR(sums.cross_entropy, ce, 1e-6);
  EXPECT_NEAR(sums.z_loss, z, 1e-5);
}

TEST(LmLossTest, InPlaceMatchesSeparateOutput) {
  const int64_t t = 6, v = 301;
  std::vector<float> logits(t * v), d(t * v);
  FillNormal(logits.data(), t * v, 3.0, 4);
  const std::vector<int32_t> targets = {0, 300, 5, 77, 150, 9};
  const std::vector<float> weights = {1, 0, 1, 0.25f, 1, 3};
  const LmLossSums a = LmLossForwardBackward(logits.data(), targets.data(), weights.data(), t, v,
                                             1e-4, 0.1, d.data());
  std::vector<float> in_place = logits;
  const LmLossSums b = LmLossForwardBackward(in_place.data(), targets.data(), weights.data(), t, v,
                                             1e-4, 0.1, in_place.data());
  EXPECT_EQ(in_place, d);
  EXPECT_EQ(a.cross_entropy, b.cross_entropy);
  EXPECT_EQ(a.z_loss, b.z_loss);
  EXPECT_EQ(a.correct, b.correct);
}

TEST(LmLossTest, LargeLogitsStayFinite) {
  const std::vector<float> logits = {1000.0f, 1000.0f, -1000.0f};
  const std::vector<int32_t> targets = {0};
  const std::vector<float> weights = {1};
  std::vector<float> d(3);
  const LmLossSums s = LmLossForwardBackward(logits.data(), targets.data(), weights.data(), 1, 3,
                                             1e-4, 1.0, d.data());
  EXPECT_NEAR(s.cross_entropy, std::log(2.0), 1e-6);
  EXPECT_NEAR(s.z_loss, std::pow(1000.0 + std::log(2.0), 2), 1e-2);
  const double k = 1.0 + 2e-4 * (1000.0 + std::log(2.0));
  EXPECT_NEAR(d[0], k / 2 - 1, 1e-6);
  EXPECT_NEAR(d[1], k / 2, 1e-6);
  EXPECT_EQ(d[2], 0.0f);  // e^-2000 underflows to 0, as std::exp's would
}

TEST(LmLossDeathTest, TargetOutsideVocabularyAborts) {
  const std::vector<float> logits(4, 0.0f);
  const std::vector<int32_t> targets = {4};
  const std::vector<float> weights = {1};
  std::vector<float> d(4);
  EXPECT_DEATH(
      LmLossForwardBackward(logits.data(), targets.data(), weights.data(), 1, 4, 0, 1, d.data()),
      "target 4 is outside");
}

}  // namespace
}  // namespace openmoe
