// CounterRng (core/rng.h) against the algorithms it names, re-implemented here: splitmix64's
// finaliser, FNV-1a, the key/counter mixing, 53-bit uniforms and Box-Muller; plus independence
// of streams and counters, and the ranges and moments of every distribution.
#include "core/rng.h"

#include <cmath>
#include <set>
#include <vector>

#include <gtest/gtest.h>

namespace openmoe {
namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

// splitmix64 (Vigna): one step of the generator, state advanced by the golden gamma first.
uint64_t SplitMix64(uint64_t z) {
  z += kGolden;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

TEST(CounterRng, MixIsSplitMix64WithItsPublishedOutputs) {
  // splitmix64 seeded with 0 yields these first outputs: Mix(0), Mix(gamma), Mix(2 gamma).
  EXPECT_EQ(CounterRng::Mix(0), 0xe220a8397b1dcdafull);
  EXPECT_EQ(CounterRng::Mix(kGolden), 0x6e789e6aa1b965f4ull);
  EXPECT_EQ(CounterRng::Mix(2 * kGolden), 0x06c45d188009454full);
  for (uint64_t x : {uint64_t{1}, uint64_t{42}, ~uint64_t{0}, uint64_t{0x123456789abcdefull}})
    EXPECT_EQ(CounterRng::Mix(x), SplitMix64(x)) << x;
}

TEST(CounterRng, StreamIdIsFnv1aThenTheFinaliser) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ull);  // FNV-1a's published vectors
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  for (const char* name : {"", "a", "embedding", "layers.3.moe.experts.wi_0"})
    EXPECT_EQ(StreamId(name), SplitMix64(Fnv1a64(name))) << name;
  EXPECT_NE(StreamId("layers.1.attn.wq"), StreamId("layers.1.attn.wk"));
}

TEST(CounterRng, BitsAndUniformFollowTheKeyAndCounterMixing) {
  for (const uint64_t seed : {uint64_t{0}, uint64_t{7}, uint64_t{1} << 40}) {
    for (const uint64_t stream : {uint64_t{0}, StreamId("logits")}) {
      const CounterRng rng(seed, stream);
      const uint64_t key = SplitMix64(seed) ^ SplitMix64(stream + kGolden);
      for (const uint64_t c : {uint64_t{0}, uint64_t{1}, uint64_t{999}, ~uint64_t{0}}) {
        const uint64_t bits = SplitMix64(key ^ SplitMix64(c));
        EXPECT_EQ(rng.Bits(c), bits);
        EXPECT_EQ(rng.Uniform(c), static_cast<double>(bits >> 11) / 9007199254740992.0);
        // Box-Muller over sub-counters 2c and 2c + 1, u1 kept off 0 by half an ulp.
        const double u1 = (static_cast<double>(rng.Bits(2 * c) >> 11) + 0.5) / 9007199254740992.0;
        const double u2 = rng.Uniform(2 * c + 1);
        EXPECT_DOUBLE_EQ(rng.Normal(c), std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2));
      }
    }
  }
}

TEST(CounterRng, SameInputsSameValuesAnyOrder) {
  const CounterRng a(3, 5), b(3, 5);
  std::vector<double> forward, backward(100);
  for (uint64_t c = 0; c < 100; ++c) forward.push_back(a.Normal(c));
  for (uint64_t c = 100; c-- > 0;) backward[c] = b.Normal(c);
  EXPECT_EQ(forward, backward);
}

// Pearson correlation of two sequences.
double Correlation(const std::vector<double>& x, const std::vector<double>& y) {
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) mx += x[i], my += y[i];
  mx /= x.size(), my /= y.size();
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxy / std::sqrt(sxx * syy);
}

TEST(CounterRng, StreamsSeedsAndNeighbouringCountersAreIndependent) {
  constexpr int kN = 20000;  // correlation of independent sequences: sd 1/sqrt(N) = 0.007
  const CounterRng s1(1, StreamId("a")), s2(1, StreamId("b")), other_seed(2, StreamId("a"));
  std::vector<double> u1, u2, u3, next;
  std::set<uint64_t> bits;
  for (uint64_t c = 0; c < kN; ++c) {
    u1.push_back(s1.Uniform(c));
    u2.push_back(s2.Uniform(c));
    u3.push_back(other_seed.Uniform(c));
    next.push_back(s1.Uniform(c + 1));
    bits.insert(s1.Bits(c));
    bits.insert(s2.Bits(c));
  }
  EXPECT_LT(std::fabs(Correlation(u1, u2)), 0.04);
  EXPECT_LT(std::fabs(Correlation(u1, u3)), 0.04);
  EXPECT_LT(std::fabs(Correlation(u1, next)), 0.04);
  EXPECT_EQ(bits.size(), 2u * kN);  // no collisions between or within the streams
}

TEST(CounterRng, DistributionsHaveTheirRangesAndMoments) {
  constexpr int kN = 40000;
  const CounterRng rng(11, StreamId("moments"));
  double um = 0, uv = 0, nm = 0, nv = 0, tm = 0, tv = 0;
  std::vector<int> buckets(7, 0);
  for (uint64_t c = 0; c < kN; ++c) {
    const double u = rng.Uniform(c), z = rng.Normal(c), t = rng.TruncatedNormal(c);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ASSERT_TRUE(std::isfinite(z));
    ASSERT_LE(std::fabs(t), 2.0);
    const uint64_t k = rng.UniformInt(c, 7);
    ASSERT_LT(k, 7u);
    ++buckets[k];
    um += u, uv += u * u, nm += z, nv += z * z, tm += t, tv += t * t;
  }
  um /= kN, uv = uv / kN - um * um, nm /= kN, nv = nv / kN - nm * nm, tm /= kN, tv = tv / kN - tm * tm;
  EXPECT_NEAR(um, 0.5, 0.01);
  EXPECT_NEAR(uv, 1.0 / 12, 0.005);
  EXPECT_NEAR(nm, 0.0, 0.03);
  EXPECT_NEAR(nv, 1.0, 0.03);
  EXPECT_NEAR(tm, 0.0, 0.03);
  // Variance of N(0,1) truncated to [-2, 2]: 1 - 4 phi(2) / (2 Phi(2) - 1) = 0.7737.
  EXPECT_NEAR(tv, 0.7737, 0.02);
  for (int count : buckets) EXPECT_NEAR(count, kN / 7.0, 5 * std::sqrt(kN / 7.0));
}

}  // namespace
}  // namespace openmoe
