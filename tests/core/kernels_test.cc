#include "core/kernels.h"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

namespace openmoe {
namespace {

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
