#include "core/kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

namespace openmoe {
namespace {

// Values in [-scale, scale) from a fixed formula (no RNG: the RNG is tested on its own).
std::vector<float> Fill(int64_t n, int salt, double scale = 1.0) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i)
    v[i] = static_cast<float>(scale * (((i * 37 + salt * 11) % 101) / 50.5 - 1.0));
  return v;
}

const int64_t kSizes[] = {0, 1, 7, 8, 9, 15, 16, 17, 1000, 1003};

TEST(LaneSum, SumsEveryTermOnceWhateverTheLength) {
  for (const int64_t n : kSizes) {
    // sum_{i<n} i = n(n-1)/2, exact in double at these sizes.
    EXPECT_EQ(LaneSum(n, [](int64_t i) { return static_cast<double>(i); }), n * (n - 1) / 2.0) << n;
  }
}

TEST(Kernels, AddInPlaceAndAxpyMatchPlainLoops) {
  for (const int64_t n : kSizes) {
    const std::vector<float> x = Fill(n, 1), y0 = Fill(n, 2);
    std::vector<float> y = y0;
    AddInPlace(y.data(), x.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(y[i], y0[i] + x[i]) << n << " " << i;
    y = y0;
    Axpy(-0.375f, x.data(), y.data(), n);
    // Within one rounding of the exact a * x + y (the compiler may fuse the multiply-add).
    for (int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(y[i], -0.375 * x[i] + y0[i], 1.2e-7 * (1 + std::fabs(y0[i]))) << n << " " << i;
  }
}

TEST(Kernels, DotAndSumSquaresMatchADoubleLoop) {
  for (const int64_t n : kSizes) {
    const std::vector<float> x = Fill(n, 3, 1e3), y = Fill(n, 4, 1e-2);
    double dot = 0, ss = 0;
    for (int64_t i = 0; i < n; ++i) {
      dot += static_cast<double>(x[i]) * y[i];
      ss += static_cast<double>(x[i]) * x[i];
    }
    EXPECT_NEAR(Dot(x.data(), y.data(), n), dot, 1e-12 * (1 + std::fabs(dot)) * (n + 1)) << n;
    EXPECT_NEAR(SumSquares(x.data(), n), ss, 1e-12 * (1 + ss)) << n;
  }
  // Accumulated in double: in float, 1 + 4095 terms of 2^-30 would stay at 1.
  std::vector<float> x(4096, 0x1.0p-30f), ones(4096, 1.0f);
  x[0] = 1.0f;
  EXPECT_EQ(Dot(x.data(), ones.data(), 4096), 1.0 + 4095 * 0x1.0p-30);
  EXPECT_EQ(SumSquares(ones.data(), 4096), 4096.0);
}

TEST(Kernels, SoftmaxRowsAndLogSumExpMatchTheClosedForm) {
  for (const int64_t cols : {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{33}}) {
    const int64_t rows = 5;
    // Row 3 is shifted by +1000 and row 4 by -1000: the max subtraction must keep them finite.
    std::vector<float> x = Fill(rows * cols, 5, 4.0);
    for (int64_t c = 0; c < cols; ++c) {
      x[3 * cols + c] += 1000.0f;
      x[4 * cols + c] -= 1000.0f;
    }
    std::vector<float> y(rows * cols), lse(rows);
    SoftmaxRows(x.data(), rows, cols, y.data(), lse.data());
    for (int64_t r = 0; r < rows; ++r) {
      double mx = -1e300, sum = 0;
      for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, static_cast<double>(x[r * cols + c]));
      for (int64_t c = 0; c < cols; ++c) sum += std::exp(x[r * cols + c] - mx);
      const double want_lse = mx + std::log(sum);
      EXPECT_NEAR(lse[r], want_lse, 1e-6 * (1 + std::fabs(want_lse))) << r;
      double total = 0;
      for (int64_t c = 0; c < cols; ++c) {
        EXPECT_NEAR(y[r * cols + c], std::exp(x[r * cols + c] - want_lse), 1e-6) << r << " " << c;
        total += y[r * cols + c];
      }
      EXPECT_NEAR(total, 1.0, 1e-6);
    }
    // In place (y aliasing x) and without lse give the same probabilities.
    std::vector<float> z = x;
    SoftmaxRows(z.data(), rows, cols, z.data(), nullptr);
    EXPECT_EQ(z, y);
  }
}

TEST(Kernels, SiluAndItsGradientMatchTheClosedFormAndFiniteDifferences) {
  auto silu = [](double v) { return v / (1.0 + std::exp(-v)); };
  for (double v = -12.0; v <= 12.0; v += 0.37) {
    const float f = static_cast<float>(v);
    EXPECT_NEAR(Sigmoid(f), 1.0 / (1.0 + std::exp(-static_cast<double>(f))), 1e-7);
    EXPECT_NEAR(Silu(f), silu(f), 1e-6 * (1 + std::fabs(v)));
    // Central difference of the double closed form: error O(h^2) ~ 1e-10.
    const double h = 1e-5;
    const double fd = (silu(f + h) - silu(f - h)) / (2 * h);
    EXPECT_NEAR(SiluGrad(f), fd, 1e-6) << v;
  }
  EXPECT_EQ(Silu(0.0f), 0.0f);
  EXPECT_EQ(SiluGrad(0.0f), 0.5f);
}

// The answer by a plain scan, for comparison.
int64_t NaiveFirstNonFinite(const std::vector<float>& x) {
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i])) return static_cast<int64_t>(i);
  return -1;
}

TEST(FirstNonFinite, FindsTheFirstNanOrInfinityAnywhere) {
  const float kInf = std::numeric_limits<float>::infinity();
  const float kNan = std::numeric_limits<float>::quiet_NaN();
  const float kMax = std::numeric_limits<float>::max();
  const float kDenorm = std::numeric_limits<float>::denorm_min();
  for (const int64_t n : {0, 1, 7, 4095, 4096, 4097, 10000}) {
    std::vector<float> x(n);
    for (int64_t i = 0; i < n; ++i) x[i] = (i % 3 == 0 ? kMax : i % 3 == 1 ? -kDenorm : 0.5f);
    EXPECT_EQ(FirstNonFinite(x.data(), n), -1) << n;
    for (const int64_t at : {int64_t{0}, n / 2, n - 1}) {
      if (n == 0) continue;
      for (const float bad : {kInf, -kInf, kNan, -kNan}) {
        std::vector<float> y = x;
        y[at] = bad;
        if (at + 1 < n) y[n - 1] = kNan;  // a later bad value does not hide the first
        EXPECT_EQ(FirstNonFinite(y.data(), n), NaiveFirstNonFinite(y)) << n << " " << at;
        EXPECT_EQ(FirstNonFinite(y.data(), n), at);
      }
    }
  }
}

}  // namespace
}  // namespace openmoe
