#include "model/attention.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

using testing::ExpectGradientMatches;
using testing::FillNormal;

constexpr AttentionDims kDims = {
    .batch = 2, .seq_len = 6, .d_model = 8, .num_heads = 2, .head_dim = 4};
constexpr int64_t kTokens = 12, kWidth = 8;
constexpr float kBase = 10000.0f;
// Row 0 packs two examples. Row 1 reuses id 2 after a gap (the mask is by id equality, not
// contiguity) and ends in two padding tokens (segment 0).
const std::vector<int32_t> kSegments = {1, 1, 1, 2, 2, 2, /**/ 2, 1, 1, 2, 0, 0};

// Straightforward double-precision attention written from the definition, sharing no code with
// the implementation (its own RoPE angles, mask and softmax).
std::vector<double> ReferenceAttention(const std::vector<float>& x, const std::vector<float>& wq,
                                       const std::vector<float>& wk, const std::vector<float>& wv,
                                       const std::vector<float>& wo,
                                       const std::vector<int32_t>& seg) {
  const int64_t s_len = kDims.seq_len, d = kDims.d_model, hd = kDims.head_dim, half = hd / 2;
  auto project = [&](const std::vector<float>& w) {
    std::vector<double> out(kTokens * kWidth, 0.0);
    for (int64_t t = 0; t < kTokens; ++t)
      for (int64_t c = 0; c < kWidth; ++c)
        for (int64_t e = 0; e < d; ++e)
          out[t * kWidth + c] += double{x[t * d + e]} * w[e * kWidth + c];
    return out;
  };
  auto rope = [&](std::vector<double> a) {
    for (int64_t t = 0; t < kTokens; ++t) {
      const double p = static_cast<double>(t % s_len);
      for (int64_t h = 0; h < kDims.num_heads; ++h) {
        double* v = &a[t * kWidth + h * hd];
        for (int64_t i = 0; i < half; ++i) {
          const double th = p * std::pow(double{kBase}, -2.0 * i / hd);
          const double x1 = v[i], x2 = v[i + half];
          v[i] = x1 * std::cos(th) - x2 * std::sin(th);
          v[i + half] = x2 * std::cos(th) + x1 * std::sin(th);
        }
      }
    }
    return a;
  };
  const std::vector<double> q = rope(project(wq)), k = rope(project(wk)), v = project(wv);
  std::vector<double> ctx(kTokens * kWidth, 0.0);
  for (int64_t b = 0; b < kDims.batch; ++b) {
    for (int64_t h = 0; h < kDims.num_heads; ++h) {
      for (int64_t i = 0; i < s_len; ++i) {
        const int64_t ti = b * s_len + i;
        std::vector<double> p(s_len, 0.0);
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) {
          const int64_t tj = b * s_len + j;
          if (seg[tj] != seg[ti]) continue;
          double score = 0.0;
          for (int64_t c = 0; c < hd; ++c)
            score += q[ti * kWidth + h * hd + c] * k[tj * kWidth + h * hd + c];
          p[j] = std::exp(score);  // test scores stay far below double's exp overflow (709)
          sum += p[j];
        }
        for (int64_t j = 0; j < s_len; ++j)
          for (int64_t c = 0; c < hd; ++c)
            ctx[ti * kWidth + h * hd + c] += p[j] / sum * v[(b * s_len + j) * kWidth + h * hd + c];
      }
    }
  }
  std::vector<double> y(kTokens * d, 0.0);
  for (int64_t t = 0; t < kTokens; ++t)
    for (int64_t e = 0; e < d; ++e)
      for (int64_t c = 0; c < kWidth; ++c) y[t * d + e] += ctx[t * kWidth + c] * wo[c * d + e];
  return y;
}

class AttentionTest : public ::testing::Test {
 protected:
  AttentionTest()
      : rope_(MakeRopeTable(kDims.seq_len, kDims.head_dim, kBase)),
        x_(kTokens * kDims.d_model),
        wq_(kDims.d_model * kWidth),
        wk_(wq_.size()),
        wv_(wq_.size()),
        wo_(kWidth * kDims.d_model),
        y_(x_.size()) {
    // Unit inputs and weights of std 1/sqrt(fan_in): q, k ~ O(1), scores of O(1) spread, so the
    // softmax is neither uniform nor one-hot.
    FillNormal(x_.data(), x_.size(), 1.0, 1);
    FillNormal(wq_.data(), wq_.size(), 1.0 / std::sqrt(8.0), 2);
    FillNormal(wk_.data(), wk_.size(), 1.0 / std::sqrt(8.0), 3);
    FillNormal(wv_.data(), wv_.size(), 1.0 / std::sqrt(8.0), 4);
    FillNormal(wo_.data(), wo_.size(), 1.0 / std::sqrt(8.0), 5);
  }
  AttentionWeights Weights() const { return {wq_.data(), wk_.data(), wv_.data(), wo_.data()}; }
  void Forward() {
    AttentionForward(kDims, rope_, Weights(), x_.data(), kSegments.data(), &cache_, y_.data());
  }
  // Perturbs token `changed` of x (then restores it); returns, per token, whether its output moved.
  std::vector<bool> OutputsMovedBy(int64_t changed) {
    const int64_t d = kDims.d_model;
    Forward();
    const std::vector<float> before = y_, saved_x = x_;
    for (int64_t e = 0; e < d; ++e) x_[changed * d + e] += 1.5f;
    Forward();
    x_ = saved_x;
    std::vector<bool> moved(kTokens, false);
    // Exact comparison: a masked key contributes an exact 0, so unaffected outputs are bitwise
    // identical; affected ones move by O(1).
    for (int64_t i = 0; i < kTokens * d; ++i) moved[i / d] = moved[i / d] || y_[i] != before[i];
    return moved;
  }

  RopeTable rope_;
  std::vector<float> x_, wq_, wk_, wv_, wo_, y_;
  AttentionCache cache_;
};

TEST_F(AttentionTest, ForwardMatchesNaiveReferenceWithPackedSegments) {
  Forward();
  const std::vector<double> ref = ReferenceAttention(x_, wq_, wk_, wv_, wo_, kSegments);
  double max_abs = 0.0;
  for (size_t i = 0; i < y_.size(); ++i) {
    EXPECT_NEAR(y_[i], ref[i], 1e-5) << i;
    max_abs = std::max(max_abs, std::fabs(ref[i]));
  }
  EXPECT_GT(max_abs, 0.1);  // the comparison is not between near-zeros
}

TEST_F(AttentionTest, MaskedProbabilitiesAreExactlyZero) {
  Forward();
  const int64_t s = kDims.seq_len;
  for (int64_t b = 0; b < kDims.batch; ++b)
    for (int64_t h = 0; h < kDims.num_heads; ++h)
      for (int64_t i = 0; i < s; ++i) {
        double sum = 0.0;
        for (int64_t j = 0; j < s; ++j) {
          const float p = cache_.probs[((b * kDims.num_heads + h) * s + i) * s + j];
          const bool allowed = j <= i && kSegments[b * s + i] == kSegments[b * s + j];
          if (allowed) {
            EXPECT_GT(p, 0.0f);
          } else {
            EXPECT_EQ(p, 0.0f) << b << " " << h << " " << i << " " << j;
          }
          sum += p;
        }
        EXPECT_NEAR(sum, 1.0, 1e-6);
      }
}

TEST_F(AttentionTest, SaturatedSoftmaxHasNoSubnormalsAndStillMatchesReference) {
  // wq scaled 10x spreads the scores over ~100, so some allowed keys fall more than 40 below their
  // row's max: those get probability exactly 0 (not a subnormal), at no visible cost in accuracy.
  for (float& v : wq_) v *= 10.0f;
  Forward();
  const int64_t s = kDims.seq_len;
  int64_t cut = 0;
  for (int64_t bh = 0; bh < kDims.batch * kDims.num_heads; ++bh)
    for (int64_t i = 0; i < s; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        const int64_t b = bh / kDims.num_heads;
        const float p = cache_.probs[(bh * s + i) * s + j];
        EXPECT_TRUE(p == 0.0f || std::fpclassify(p) == FP_NORMAL) << p;
        cut += kSegments[b * s + i] == kSegments[b * s + j] && p == 0.0f;
      }
  EXPECT_GT(cut, 0);  // the regime under test was reached
  const std::vector<double> ref = ReferenceAttention(x_, wq_, wk_, wv_, wo_, kSegments);
  for (size_t i = 0; i < y_.size(); ++i) EXPECT_NEAR(y_[i], ref[i], 1e-4) << i;
}

TEST_F(AttentionTest, NoAttentionAcrossSegmentsOrIntoTheFuture) {
  // Row 0 is segments {1: tokens 0-2, 2: tokens 3-5}; row 1 (tokens 6-11) must never move.
  // Token 1 (segment 1): the later tokens of segment 1 see it, segment 2 does not, even though
  // causality alone would allow it.
  const std::vector<bool> a = OutputsMovedBy(1);
  const std::vector<bool> expect_a = {false, true,  true,  false, false, false,
                                      false, false, false, false, false, false};
  EXPECT_EQ(a, expect_a);
  // Token 4 (segment 2): segment 1 and the earlier token 3 do not see it; token 5 does.
  const std::vector<bool> b = OutputsMovedBy(4);
  const std::vector<bool> expect_b = {false, false, false, false, true,  true,
                                      false, false, false, false, false, false};
  EXPECT_EQ(b, expect_b);
}

TEST_F(AttentionTest, GradientsMatchFiniteDifferences) {
  std::vector<float> r(y_.size());
  FillNormal(r.data(), r.size(), 1.0, 6);
  auto loss = [&] {  // L = sum(y * r), so dL/dy = r
    Forward();
    double l = 0.0;
    for (size_t i = 0; i < y_.size(); ++i) l += double{y_[i]} * r[i];
    return l;
  };
  loss();
  // Accumulators start at 1 so the check also proves the backward adds rather than overwrites.
  std::vector<float> dx(x_.size(), 1.0f), dwq(wq_.size(), 1.0f), dwk(wk_.size(), 1.0f),
      dwv(wv_.size(), 1.0f), dwo(wo_.size(), 1.0f);
  AttentionBackward(kDims, rope_, Weights(), x_.data(), kSegments.data(), &cache_, r.data(),
                    {dwq.data(), dwk.data(), dwv.data(), dwo.data()}, dx.data());
  for (auto* g : {&dx, &dwq, &dwk, &dwv, &dwo})
    for (float& v : *g) v -= 1.0f;
  ExpectGradientMatches("attention dx", loss, x_.data(), x_.size(), dx.data());
  ExpectGradientMatches("attention dwq", loss, wq_.data(), wq_.size(), dwq.data());
  ExpectGradientMatches("attention dwk", loss, wk_.data(), wk_.size(), dwk.data());
  ExpectGradientMatches("attention dwv", loss, wv_.data(), wv_.size(), dwv.data());
  ExpectGradientMatches("attention dwo", loss, wo_.data(), wo_.size(), dwo.data());
}

}  // namespace
}  // namespace openmoe
