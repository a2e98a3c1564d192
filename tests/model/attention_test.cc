#include "model/attention.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/gemm.h"

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

// The softmax the backward recomputes from q, k and the log-sum-exp.
std::vector<float> Probabilities(const AttentionCache& cache, int64_t b, int64_t h) {
  std::vector<float> p(kDims.seq_len * kDims.seq_len, -1.0f);
  AttentionProbabilities(kDims, cache, kSegments.data(), b, h, p.data());
  return p;
}

TEST_F(AttentionTest, MaskedProbabilitiesAreExactlyZero) {
  Forward();
  const int64_t s = kDims.seq_len;
  for (int64_t b = 0; b < kDims.batch; ++b)
    for (int64_t h = 0; h < kDims.num_heads; ++h) {
      const std::vector<float> probs = Probabilities(cache_, b, h);
      for (int64_t i = 0; i < s; ++i) {
        double sum = 0.0;
        for (int64_t j = 0; j < s; ++j) {
          const float p = probs[i * s + j];
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
}

TEST_F(AttentionTest, SaturatedSoftmaxHasNoSubnormalsAndStillMatchesReference) {
  // wq scaled 10x spreads the scores over ~100, so some allowed keys fall more than 40 below their
  // row's max: those get probability exactly 0 (not a subnormal), at no visible cost in accuracy.
  for (float& v : wq_) v *= 10.0f;
  Forward();
  const int64_t s = kDims.seq_len;
  int64_t cut = 0;
  for (int64_t bh = 0; bh < kDims.batch * kDims.num_heads; ++bh) {
    const int64_t b = bh / kDims.num_heads;
    const std::vector<float> probs = Probabilities(cache_, b, bh % kDims.num_heads);
    for (int64_t i = 0; i < s; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        const float p = probs[i * s + j];
        EXPECT_TRUE(p == 0.0f || std::fpclassify(p) == FP_NORMAL) << p;
        cut += kSegments[b * s + i] == kSegments[b * s + j] && p == 0.0f;
      }
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

// ---- The blocked kernel against full-probabilities attention, on shapes that cross blocks. ----

// The attention as it was before the blocked kernel, forward and backward, as plain double loops:
// the full (B, H, S, S) softmax is formed, kept, and differentiated (dS = P * (dP - rowsum(P dP))).
struct NaiveAttention {
  std::vector<double> y, dx, dwq, dwk, dwv, dwo;
};

NaiveAttention NaiveAttentionWithGrads(const AttentionDims& dims, const std::vector<float>& x,
                                       const std::vector<float>& wq, const std::vector<float>& wk,
                                       const std::vector<float>& wv, const std::vector<float>& wo,
                                       const std::vector<int32_t>& seg,
                                       const std::vector<float>& dy) {
  const int64_t nb = dims.batch, s = dims.seq_len, d = dims.d_model, nh = dims.num_heads,
                hd = dims.head_dim, w = nh * hd, t_len = nb * s, half = hd / 2;
  auto project = [&](const std::vector<float>& wt) {  // x @ wt: (T, d) (d, W)
    std::vector<double> out(t_len * w, 0.0);
    for (int64_t t = 0; t < t_len; ++t)
      for (int64_t e = 0; e < d; ++e)
        for (int64_t c = 0; c < w; ++c) out[t * w + c] += double{x[t * d + e]} * wt[e * w + c];
    return out;
  };
  auto rotate = [&](std::vector<double> a, double sign) {  // sign -1: the transposed rotation
    for (int64_t t = 0; t < t_len; ++t)
      for (int64_t h = 0; h < nh; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const double th = static_cast<double>(t % s) * std::pow(double{kBase}, -2.0 * i / hd);
          double* r = &a[t * w + h * hd];
          const double x1 = r[i], x2 = r[i + half];
          r[i] = x1 * std::cos(th) - x2 * sign * std::sin(th);
          r[i + half] = x2 * std::cos(th) + x1 * sign * std::sin(th);
        }
    return a;
  };
  const std::vector<double> q = rotate(project(wq), 1.0), k = rotate(project(wk), 1.0),
                            v = project(wv);
  auto at = [&](const std::vector<double>& a, int64_t b, int64_t i, int64_t h, int64_t c) {
    return a[(b * s + i) * w + h * hd + c];
  };
  auto allowed = [&](int64_t b, int64_t i, int64_t j) {
    return j <= i && seg[b * s + i] == seg[b * s + j];
  };
  std::vector<double> probs(nb * nh * s * s, 0.0), ctx(t_len * w, 0.0);  // (B, H, S, S)
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t i = 0; i < s; ++i) {
        double* p = &probs[((b * nh + h) * s + i) * s];
        double mx = -1e300, sum = 0.0;
        for (int64_t j = 0; j < s; ++j) {
          if (!allowed(b, i, j)) continue;
          for (int64_t c = 0; c < hd; ++c) p[j] += at(q, b, i, h, c) * at(k, b, j, h, c);
          mx = std::max(mx, p[j]);
        }
        for (int64_t j = 0; j < s; ++j) {
          p[j] = allowed(b, i, j) ? std::exp(p[j] - mx) : 0.0;
          sum += p[j];
        }
        for (int64_t j = 0; j < s; ++j) {
          p[j] /= sum;
          for (int64_t c = 0; c < hd; ++c) ctx[(b * s + i) * w + h * hd + c] += p[j] * at(v, b, j, h, c);
        }
      }
  NaiveAttention out;
  out.y.assign(t_len * d, 0.0);
  out.dwo.assign(w * d, 0.0);
  std::vector<double> dctx(t_len * w, 0.0);
  for (int64_t t = 0; t < t_len; ++t)
    for (int64_t c = 0; c < w; ++c)
      for (int64_t e = 0; e < d; ++e) {
        out.y[t * d + e] += ctx[t * w + c] * wo[c * d + e];
        out.dwo[c * d + e] += ctx[t * w + c] * dy[t * d + e];
        dctx[t * w + c] += double{dy[t * d + e]} * wo[c * d + e];
      }
  std::vector<double> dq(t_len * w, 0.0), dk(t_len * w, 0.0), dv(t_len * w, 0.0);
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t i = 0; i < s; ++i) {
        const double* p = &probs[((b * nh + h) * s + i) * s];
        std::vector<double> dp(s, 0.0);
        double dot = 0.0;
        for (int64_t j = 0; j < s; ++j) {
          for (int64_t c = 0; c < hd; ++c) dp[j] += at(dctx, b, i, h, c) * at(v, b, j, h, c);
          dot += p[j] * dp[j];
        }
        for (int64_t j = 0; j < s; ++j) {
          const double ds = p[j] * (dp[j] - dot);
          for (int64_t c = 0; c < hd; ++c) {
            dv[(b * s + j) * w + h * hd + c] += p[j] * at(dctx, b, i, h, c);
            dq[(b * s + i) * w + h * hd + c] += ds * at(k, b, j, h, c);
            dk[(b * s + j) * w + h * hd + c] += ds * at(q, b, i, h, c);
          }
        }
      }
  dq = rotate(dq, -1.0);
  dk = rotate(dk, -1.0);
  out.dx.assign(t_len * d, 0.0);
  for (auto* g : {&out.dwq, &out.dwk, &out.dwv}) g->assign(d * w, 0.0);
  for (int64_t t = 0; t < t_len; ++t)
    for (int64_t e = 0; e < d; ++e)
      for (int64_t c = 0; c < w; ++c) {
        const int64_t tc = t * w + c, ec = e * w + c;
        out.dwq[ec] += double{x[t * d + e]} * dq[tc];
        out.dwk[ec] += double{x[t * d + e]} * dk[tc];
        out.dwv[ec] += double{x[t * d + e]} * dv[tc];
        out.dx[t * d + e] += dq[tc] * wq[ec] + dk[tc] * wk[ec] + dv[tc] * wv[ec];
      }
  return out;
}

// ||a - ref|| / ||ref|| over the whole tensor.
double RelativeL2(const std::vector<float>& a, const std::vector<double>& ref) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff += (a[i] - ref[i]) * (a[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff / norm);
}

// Segment ids of one row from (id, length) runs.
std::vector<int32_t> Runs(std::initializer_list<std::pair<int32_t, int64_t>> runs) {
  std::vector<int32_t> row;
  for (const auto& [id, len] : runs) row.insert(row.end(), len, id);
  return row;
}

struct BlockedCase {
  std::string name;
  AttentionDims dims;
  std::vector<std::vector<int32_t>> rows;  // (B) rows of (S) segment ids
};

void PrintTo(const BlockedCase& c, std::ostream* os) { *os << c.name; }

constexpr int64_t kB = kAttentionBlock;

// Every kind of tile: S below one block, S a multiple of it, S not, several packed segments,
// padding (segment 0) at the end, a segment id reused after a gap, and a row whose later query
// blocks start their segment past key block 0 (so it is skipped).
std::vector<BlockedCase> BlockedCases() {
  auto dims = [](int64_t b, int64_t s, int64_t d, int64_t h, int64_t hd) {
    return AttentionDims{.batch = b, .seq_len = s, .d_model = d, .num_heads = h, .head_dim = hd};
  };
  return {
      {"ShorterThanOneBlock", dims(2, 20, 16, 2, 8),
       {Runs({{1, 7}, {2, 9}, {0, 4}}), Runs({{2, 3}, {1, 5}, {2, 12}})}},
      {"TwoFullBlocksManySegments", dims(1, 2 * kB, 16, 2, 8),
       {Runs({{1, 5}, {2, 17}, {3, 30}, {4, 1}, {5, 60}, {0, 15}})}},
      {"PartialLastBlockAndSkippedKeyBlocks", dims(2, 2 * kB + 22, 16, 2, 8),
       {Runs({{1, 2 * kB + 22}}), Runs({{1, 40}, {2, kB + 66}, {0, 44}})}},
      {"LateSegmentsSkipEarlyKeyBlocks", dims(1, 3 * kB + 8, 12, 1, 4),
       {Runs({{1, kB + 6}, {2, 2 * kB - 4}, {3, 3}, {0, 3}})}},
      {"HeadDim64", dims(1, kB + 30, 32, 2, 64), {Runs({{1, 50}, {2, kB - 20}})}},
  };
}

class BlockedAttentionTest : public ::testing::TestWithParam<BlockedCase> {
 protected:
  struct Result {
    std::vector<float> y, dx, dwq, dwk, dwv, dwo;
  };
  BlockedAttentionTest() {
    const AttentionDims& dm = GetParam().dims;
    const int64_t d = dm.d_model, w = dm.num_heads * dm.head_dim, t = dm.batch * dm.seq_len;
    for (const auto& row : GetParam().rows) segments_.insert(segments_.end(), row.begin(), row.end());
    x_.resize(t * d);
    wq_.resize(d * w);
    wk_.resize(d * w);
    wv_.resize(d * w);
    wo_.resize(w * d);
    dy_.resize(t * d);
    // Scores of O(1) spread, as in the model (1/sqrt(hd) folded into wq).
    FillNormal(x_.data(), x_.size(), 1.0, 11);
    FillNormal(wq_.data(), wq_.size(), 2.0 / std::sqrt(double(d * dm.head_dim)), 12);
    FillNormal(wk_.data(), wk_.size(), 1.0 / std::sqrt(double(d)), 13);
    FillNormal(wv_.data(), wv_.size(), 1.0 / std::sqrt(double(d)), 14);
    FillNormal(wo_.data(), wo_.size(), 1.0 / std::sqrt(double(w)), 15);
    FillNormal(dy_.data(), dy_.size(), 1.0, 16);
  }
  Result Run(GemmPrecision precision) {
    AttentionDims dm = GetParam().dims;
    dm.precision = precision;
    const RopeTable rope = MakeRopeTable(dm.seq_len, dm.head_dim, kBase);
    Result r{std::vector<float>(x_.size()), std::vector<float>(x_.size(), 0.0f),
             std::vector<float>(wq_.size(), 0.0f), std::vector<float>(wk_.size(), 0.0f),
             std::vector<float>(wv_.size(), 0.0f), std::vector<float>(wo_.size(), 0.0f)};
    const AttentionWeights w{wq_.data(), wk_.data(), wv_.data(), wo_.data()};
    AttentionForward(dm, rope, w, x_.data(), segments_.data(), &cache_, r.y.data());
    AttentionBackward(dm, rope, w, x_.data(), segments_.data(), &cache_, dy_.data(),
                      {r.dwq.data(), r.dwk.data(), r.dwv.data(), r.dwo.data()}, r.dx.data());
    return r;
  }
  NaiveAttention Reference() const {
    return NaiveAttentionWithGrads(GetParam().dims, x_, wq_, wk_, wv_, wo_, segments_, dy_);
  }
  // Each output against the reference, relative L2.
  static void ExpectClose(const Result& r, const NaiveAttention& ref, double tol) {
    EXPECT_LE(RelativeL2(r.y, ref.y), tol) << "y";
    EXPECT_LE(RelativeL2(r.dx, ref.dx), tol) << "dx";
    EXPECT_LE(RelativeL2(r.dwq, ref.dwq), tol) << "dwq";
    EXPECT_LE(RelativeL2(r.dwk, ref.dwk), tol) << "dwk";
    EXPECT_LE(RelativeL2(r.dwv, ref.dwv), tol) << "dwv";
    EXPECT_LE(RelativeL2(r.dwo, ref.dwo), tol) << "dwo";
  }

  std::vector<int32_t> segments_;
  std::vector<float> x_, wq_, wk_, wv_, wo_, dy_;
  AttentionCache cache_;
};

TEST_P(BlockedAttentionTest, OutputAndEveryGradientMatchFullProbabilities) {
  ExpectClose(Run(GemmPrecision::kFp32), Reference(), 1e-6);
}

TEST_P(BlockedAttentionTest, HeadsOnTwoThreadsMatchFullProbabilitiesAndRepeatBitwise) {
  // ctest pins OpenBLAS to one thread; two threads split the heads between them (a race or a
  // shared tile would show as an O(1) error or as run-to-run differences).
  const int saved = GemmThreads();
  SetGemmThreads(2);
  for (const GemmPrecision precision : {GemmPrecision::kFp32, GemmPrecision::kBf16}) {
    const Result first = Run(precision);
    const Result second = Run(precision);
    ExpectClose(first, Reference(), precision == GemmPrecision::kFp32 ? 1e-6 : 2e-2);
    EXPECT_EQ(first.y, second.y);
    EXPECT_EQ(first.dx, second.dx);
    EXPECT_EQ(first.dwq, second.dwq);
    EXPECT_EQ(first.dwk, second.dwk);
    EXPECT_EQ(first.dwv, second.dwv);
    EXPECT_EQ(first.dwo, second.dwo);
  }
  SetGemmThreads(saved);
}

TEST_P(BlockedAttentionTest, Bf16StaysWithinBf16RoundingOfTheFp32Reference) {
  // bf16 GEMM inputs (8 mantissa bits, relative rounding 2^-9) with fp32 softmax: a few times
  // 2^-9 off, not more (a wrong mask or a lost block would be O(1) off).
  ExpectClose(Run(GemmPrecision::kBf16), Reference(), 2e-2);
}

INSTANTIATE_TEST_SUITE_P(Shapes, BlockedAttentionTest, ::testing::ValuesIn(BlockedCases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace openmoe
