#include "model/rmsnorm.h"

#include <cmath>
#include <vector>

#include "core/gemm.h"
#include "gtest/gtest.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

using testing::ExpectGradientMatches;
using testing::FillNormal;

TEST(RmsNormTest, ForwardMatchesClosedFormOnHandMadeVector) {
  // x = (1, 2, 3, 4): mean(x^2) = 30 / 4 = 7.5.
  const std::vector<float> x = {1, 2, 3, 4};
  const std::vector<float> scale = {1.0f, 0.5f, 2.0f, -1.0f};
  const float eps = 0.5f;  // large, so a dropped eps would show
  std::vector<float> y(4), rstd(1);
  RmsNormForward(x.data(), scale.data(), 1, 4, eps, y.data(), rstd.data());
  const double r = 1.0 / std::sqrt(7.5 + 0.5);
  EXPECT_NEAR(rstd[0], r, 1e-7);
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(y[j], x[j] * r * scale[j], 1e-6) << j;
}

TEST(RmsNormTest, NoMeanSubtraction) {
  // A constant row normalises to +-1, not to 0 as LayerNorm would.
  const std::vector<float> x = {3, 3, 3}, scale = {1, 1, 1};
  std::vector<float> y(3), rstd(1);
  RmsNormForward(x.data(), scale.data(), 1, 3, 0.0f, y.data(), rstd.data());
  for (float v : y) EXPECT_NEAR(v, 1.0f, 1e-6);
}

TEST(RmsNormTest, GradientsMatchFiniteDifferences) {
  const int64_t n = 3, d = 8;
  const float eps = 1e-6f;
  std::vector<float> x(n * d), scale(d), r(n * d), y(n * d), rstd(n);
  FillNormal(x.data(), n * d, 1.0, 1);
  FillNormal(scale.data(), d, 1.0, 2);
  FillNormal(r.data(), n * d, 1.0, 3);
  // L = sum(y * r) makes dL/dy = r.
  auto loss = [&] {
    RmsNormForward(x.data(), scale.data(), n, d, eps, y.data(), rstd.data());
    double l = 0.0;
    for (int64_t i = 0; i < n * d; ++i) l += static_cast<double>(y[i]) * r[i];
    return l;
  };
  loss();
  // Start the accumulators at 1 so the test also proves the backward adds rather than overwrites.
  std::vector<float> dx(n * d, 1.0f), dscale(d, 1.0f);
  RmsNormBackward(r.data(), x.data(), scale.data(), rstd.data(), n, d, dx.data(), dscale.data());
  for (float& g : dx) g -= 1.0f;
  for (float& g : dscale) g -= 1.0f;
  ExpectGradientMatches("rmsnorm dx", loss, x.data(), n * d, dx.data());
  ExpectGradientMatches("rmsnorm dscale", loss, scale.data(), d, dscale.data());
}

}  // namespace
}  // namespace openmoe

namespace openmoe {
namespace {

// Forward and backward run on the GEMM threads; dscale is summed over fixed blocks of rows, so
// one thread and two give the same bits (300 rows: several blocks and ranges).
TEST(RmsNorm, SameBitsOnOneAndTwoThreads) {
  const int64_t n = 300, d = 96;
  std::vector<float> x(n * d), dy(n * d), scale(d);
  for (int64_t i = 0; i < n * d; ++i) {
    x[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
    dy[i] = static_cast<float>(std::cos(0.11 * static_cast<double>(i)));
  }
  for (int64_t j = 0; j < d; ++j) scale[j] = 1.0f + 0.01f * static_cast<float>(j);
  std::vector<std::vector<float>> outs;
  const int saved = GemmThreads();
  for (const int threads : {1, 2}) {
    SetGemmThreads(threads);
    std::vector<float> y(n * d), rstd(n), dx(n * d, 0.5f), dscale(d, 0.25f);
    RmsNormForward(x.data(), scale.data(), n, d, 1e-6f, y.data(), rstd.data());
    RmsNormBackward(dy.data(), x.data(), scale.data(), rstd.data(), n, d, dx.data(),
                    dscale.data());
    y.insert(y.end(), dx.begin(), dx.end());
    y.insert(y.end(), dscale.begin(), dscale.end());
    outs.push_back(y);
  }
  SetGemmThreads(saved);
  EXPECT_EQ(outs[0], outs[1]);
}

}  // namespace
}  // namespace openmoe
