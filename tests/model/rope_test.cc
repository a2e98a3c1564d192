#include "model/rope.h"

#include <cmath>
#include <vector>

#include "core/kernels.h"
#include "gtest/gtest.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

using testing::FillNormal;

TEST(RopeTest, PositionZeroIsIdentity) {
  const int64_t s = 3, heads = 2, hd = 8, width = heads * hd;
  const RopeTable table = MakeRopeTable(s, hd, 10000.0f);
  std::vector<float> x(s * width);
  FillNormal(x.data(), x.size(), 1.0, 1);
  std::vector<float> rotated = x;
  ApplyRope(table, rotated.data(), 1, heads, width, false);
  for (int64_t c = 0; c < width; ++c) EXPECT_EQ(rotated[c], x[c]) << c;
  // ...and later positions do move.
  EXPECT_GT(
      std::fabs(rotated[width] - x[width]) + std::fabs(rotated[width + hd / 2] - x[width + hd / 2]),
      1e-3);
}

TEST(RopeTest, HandComputedCaseHeadDimFourPositionOne) {
  // hd = 4, base 100: theta_0 = 1, theta_1 = 100^(-1/2) = 0.1 at p = 1. Pairs are (x0, x2), (x1,
  // x3).
  const RopeTable table = MakeRopeTable(2, 4, 100.0f);
  std::vector<float> x = {0, 0, 0, 0, 1, 2, 3, 4};  // row 1 is position 1
  ApplyRope(table, x.data(), 1, 1, 4, false);
  const double c0 = std::cos(1.0), s0 = std::sin(1.0), c1 = std::cos(0.1), s1 = std::sin(0.1);
  EXPECT_NEAR(x[4], 1 * c0 - 3 * s0, 1e-6);
  EXPECT_NEAR(x[5], 2 * c1 - 4 * s1, 1e-6);
  EXPECT_NEAR(x[6], 3 * c0 + 1 * s0, 1e-6);
  EXPECT_NEAR(x[7], 4 * c1 + 2 * s1, 1e-6);
}

TEST(RopeTest, RotationPreservesNormOfEveryTokenHead) {
  const int64_t batch = 2, s = 5, heads = 3, hd = 6, stride = heads * hd + 2;  // padded rows
  const RopeTable table = MakeRopeTable(s, hd, 10000.0f);
  std::vector<float> x(batch * s * stride);
  FillNormal(x.data(), x.size(), 1.0, 2);
  std::vector<float> rotated = x;
  ApplyRope(table, rotated.data(), batch, heads, stride, false);
  for (int64_t t = 0; t < batch * s; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t off = t * stride + h * hd;
      EXPECT_NEAR(SumSquares(rotated.data() + off, hd), SumSquares(x.data() + off, hd), 1e-5);
    }
    // The padding past heads * hd is not touched.
    EXPECT_EQ(rotated[t * stride + heads * hd], x[t * stride + heads * hd]);
  }
}

TEST(RopeTest, InverseUndoesForward) {
  const int64_t batch = 2, s = 7, heads = 2, hd = 8, width = heads * hd;
  const RopeTable table = MakeRopeTable(s, hd, 10000.0f);
  std::vector<float> x(batch * s * width);
  FillNormal(x.data(), x.size(), 1.0, 3);
  std::vector<float> y = x;
  ApplyRope(table, y.data(), batch, heads, width, false);
  ApplyRope(table, y.data(), batch, heads, width, true);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-5) << i;
}

TEST(RopeTest, DotProductDependsOnlyOnRelativePosition) {
  // Place the same q and k at every position; <rope(q, p1), rope(k, p2)> must depend on p1 - p2.
  const int64_t s = 9, hd = 8;
  const RopeTable table = MakeRopeTable(s, hd, 10000.0f);
  std::vector<float> q0(hd), k0(hd), q(s * hd), k(s * hd);
  FillNormal(q0.data(), hd, 1.0, 4);
  FillNormal(k0.data(), hd, 1.0, 5);
  for (int64_t p = 0; p < s; ++p) {
    std::copy(q0.begin(), q0.end(), q.begin() + p * hd);
    std::copy(k0.begin(), k0.end(), k.begin() + p * hd);
  }
  ApplyRope(table, q.data(), 1, 1, hd, false);
  ApplyRope(table, k.data(), 1, 1, hd, false);
  auto dot = [&](int64_t p1, int64_t p2) {
    return Dot(q.data() + p1 * hd, k.data() + p2 * hd, hd);
  };
  for (int64_t delta = -3; delta <= 3; ++delta) {
    const int64_t p2_ref = delta < 0 ? -delta : 0;
    const double ref = dot(p2_ref + delta, p2_ref);
    for (int64_t p2 = 0; p2 < s; ++p2) {
      const int64_t p1 = p2 + delta;
      if (p1 < 0 || p1 >= s) continue;
      EXPECT_NEAR(dot(p1, p2), ref, 1e-4) << "p1 " << p1 << " p2 " << p2;
    }
  }
  // Not trivially constant: different offsets give different products.
  EXPECT_GT(std::fabs(dot(3, 0) - dot(0, 0)), 1e-3);
}

}  // namespace
}  // namespace openmoe
