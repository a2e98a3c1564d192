#include "model/losses.h"

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "core/check.h"

#include "core/gemm.h"
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

// The ranks of a group as threads of this process: each all-reduce publishes every rank's buffer,
// reduces them all into the caller's copy, and waits until nobody reads before writing it back.
// Only what the vocabulary-parallel loss uses.
class ThreadGroup {
 public:
  explicit ThreadGroup(int n) : n_(n), sync_(n), buffers_(n) {}

  class Member final : public Communicator {
   public:
    Member(ThreadGroup* g, int rank) : g_(g), rank_(rank) {}
    int rank() const override { return rank_; }
    int size() const override { return g_->n_; }
    void AllReduceSum(float* data, int64_t n) override {
      Reduce(data, n, [](float a, float b) { return a + b; });
    }
    void AllReduceSum(double* data, int64_t n) override {
      Reduce(data, n, [](double a, double b) { return a + b; });
    }
    void AllReduceSum(int64_t* data, int64_t n) override {
      Reduce(data, n, [](int64_t a, int64_t b) { return a + b; });
    }
    void AllReduceMin(int64_t* data, int64_t n) override {
      Reduce(data, n, [](int64_t a, int64_t b) { return std::min(a, b); });
    }
    void AllReduceMax(float* data, int64_t n) override {
      Reduce(data, n, [](float a, float b) { return std::max(a, b); });
    }
    void AllToAll(const int64_t*, int64_t*, int64_t) override { OPENMOE_CHECK(false); }
    void AllToAllV(const float*, const std::vector<int64_t>&, float*,
                   const std::vector<int64_t>&) override {
      OPENMOE_CHECK(false);
    }
    void AllToAllV(const uint16_t*, const std::vector<int64_t>&, uint16_t*,
                   const std::vector<int64_t>&) override {
      OPENMOE_CHECK(false);
    }
    void Broadcast(std::string*, int) override { OPENMOE_CHECK(false); }
    std::unique_ptr<Communicator> Split(int, int) override { return nullptr; }
    int LocalSize() override { return g_->n_; }

   private:
    template <typename T, typename Op>
    void Reduce(T* data, int64_t n, Op op) {
      g_->buffers_[rank_] = data;
      g_->sync_.arrive_and_wait();
      std::vector<T> out(static_cast<const T*>(g_->buffers_[0]),
                         static_cast<const T*>(g_->buffers_[0]) + n);
      for (int r = 1; r < g_->n_; ++r) {
        const T* other = static_cast<const T*>(g_->buffers_[r]);
        for (int64_t i = 0; i < n; ++i) out[i] = op(out[i], other[i]);
      }
      g_->sync_.arrive_and_wait();
      std::copy(out.begin(), out.end(), data);
    }
    ThreadGroup* g_;
    int rank_;
  };

  // Runs fn(member) on n threads, one per rank.
  template <typename Fn>
  void Run(Fn fn) {
    std::vector<std::thread> threads;
    for (int r = 0; r < n_; ++r) {
      threads.emplace_back([this, r, &fn] {
        Member m(this, r);
        fn(m);
      });
    }
    for (std::thread& t : threads) t.join();
  }

 private:
  int n_;
  std::barrier<> sync_;
  std::vector<const void*> buffers_;
};

// Splits (T, V) logits at `cuts` into pieces, runs the vocabulary-parallel loss on each piece in
// its own thread, and returns every piece's sums and the pieces' gradients put back together.
std::vector<LmLossSums> RunPieces(const std::vector<float>& logits,
                                  const std::vector<int32_t>& targets,
                                  const std::vector<float>& weights, int64_t t, int64_t v,
                                  const std::vector<int64_t>& cuts, double z_weight,
                                  double normalizer, std::vector<float>* dlogits) {
  const int n = static_cast<int>(cuts.size()) - 1;
  std::vector<LmLossSums> sums(n);
  dlogits->assign(t * v, 0.0f);
  ThreadGroup group(n);
  group.Run([&](Communicator& comm) {
    const int r = comm.rank();
    const int64_t begin = cuts[r], lv = cuts[r + 1] - cuts[r];
    std::vector<float> piece(t * lv), d(t * lv);
    for (int64_t i = 0; i < t; ++i)
      std::copy_n(logits.data() + i * v + begin, lv, piece.data() + i * lv);
    sums[r] = VocabParallelLmLossForwardBackward(piece.data(), targets.data(), weights.data(), t,
                                                 lv, begin, v, z_weight, normalizer, &comm,
                                                 d.data());
    for (int64_t i = 0; i < t; ++i)
      std::copy_n(d.data() + i * lv, lv, dlogits->data() + i * v + begin);
  });
  return sums;
}

TEST(VocabParallelLmLossTest, OnePieceIsTheWholeBitForBit) {
  const int64_t t = 5, v = 1003;
  std::vector<float> logits(t * v);
  FillNormal(logits.data(), logits.size(), 3.0, 17);
  const std::vector<int32_t> targets = {0, 500, 1002, 7, 64};
  const std::vector<float> weights = {1, 0, 0.5f, 1, 2};
  std::vector<float> whole_d(t * v), piece_d;
  const LmLossSums whole = LmLossForwardBackward(logits.data(), targets.data(), weights.data(), t,
                                                 v, 0.01, 0.25, whole_d.data());
  const LmLossSums piece =
      RunPieces(logits, targets, weights, t, v, {0, v}, 0.01, 0.25, &piece_d)[0];
  EXPECT_EQ(piece.cross_entropy, whole.cross_entropy);
  EXPECT_EQ(piece.z_loss, whole.z_loss);
  EXPECT_EQ(piece.weight, whole.weight);
  EXPECT_EQ(piece.correct, whole.correct);
  EXPECT_EQ(std::memcmp(piece_d.data(), whole_d.data(), whole_d.size() * sizeof(float)), 0);
}

TEST(VocabParallelLmLossTest, UnevenPiecesMatchTheWhole) {
  const int64_t t = 6, v = 301;
  std::vector<float> logits(t * v);
  FillNormal(logits.data(), logits.size(), 4.0, 5);
  // The target is the argmax in rows 0 and 3 (so `correct` is exercised across pieces).
  const std::vector<int32_t> targets = {150, 0, 300, 299, 12, 100};
  for (int64_t i : {0, 3}) logits[i * v + targets[i]] = 40.0f;
  const std::vector<float> weights = {1, 1, 0, 0.5f, 1, 1};
  std::vector<float> whole_d(t * v), piece_d;
  const LmLossSums whole = LmLossForwardBackward(logits.data(), targets.data(), weights.data(), t,
                                                 v, 0.02, 0.2, whole_d.data());
  const std::vector<LmLossSums> pieces =
      RunPieces(logits, targets, weights, t, v, {0, 100, 101, 301}, 0.02, 0.2, &piece_d);
  EXPECT_EQ(whole.correct, 2);
  for (const LmLossSums& p : pieces) {  // every rank holds the whole's sums
    EXPECT_NEAR(p.cross_entropy, whole.cross_entropy, 1e-12 * whole.cross_entropy);
    EXPECT_NEAR(p.z_loss, whole.z_loss, 1e-12 * whole.z_loss);
    EXPECT_EQ(p.weight, whole.weight);
    EXPECT_EQ(p.correct, whole.correct);
  }
  for (int64_t i = 0; i < t * v; ++i)
    EXPECT_NEAR(piece_d[i], whole_d[i], 1e-6 * std::abs(whole_d[i]) + 1e-12) << i;
}

TEST(VocabParallelLmLossTest, CorrectTakesTheFirstMaximumAcrossPieces) {
  // V = 6 in pieces {0, 1, 2} and {3, 4, 5}; the maximum 2 at columns 1 and 4.
  const int64_t v = 6;
  const std::vector<float> row = {0, 2, 1, 0, 2, 1};
  std::vector<float> logits;
  for (int i = 0; i < 3; ++i) logits.insert(logits.end(), row.begin(), row.end());
  // Target 4: a maximum, but column 1 of the other piece comes first. Target 1: the first
  // maximum. Target 5: no maximum.
  const std::vector<int32_t> targets = {4, 1, 5};
  const std::vector<float> weights = {1, 1, 1};
  std::vector<float> d;
  for (const std::vector<int64_t>& cuts : {std::vector<int64_t>{0, 3, 6}, {0, 6}}) {
    for (size_t row_only = 0; row_only < 3; ++row_only) {
      std::vector<float> one(logits.begin() + row_only * v, logits.begin() + (row_only + 1) * v);
      const LmLossSums s =
          RunPieces(one, {targets[row_only]}, {1.0f}, 1, v, cuts, 0, 1, &d)[0];
      EXPECT_EQ(s.correct, row_only == 1 ? 1 : 0) << "target " << targets[row_only];
    }
  }
  const LmLossSums all = RunPieces(logits, targets, weights, 3, v, {0, 3, 6}, 0, 1, &d)[1];
  EXPECT_EQ(all.correct, 1);
}

}  // namespace
}  // namespace openmoe

namespace openmoe {
namespace {

// Rows run on the GEMM threads and the sums are taken in token order: one thread and two give the
// same sums and gradients, bit for bit (weights with zeros, so skipped rows are mixed in).
TEST(LmLossTest, SameBitsOnOneAndTwoThreads) {
  const int64_t t = 257, v = 300;
  std::vector<float> logits(t * v), weights(t);
  std::vector<int32_t> targets(t);
  for (int64_t i = 0; i < t * v; ++i) logits[i] = static_cast<float>(3.0 * std::sin(0.013 * i));
  for (int64_t i = 0; i < t; ++i) {
    targets[i] = static_cast<int32_t>((i * 37) % v);
    weights[i] = i % 5 == 0 ? 0.0f : 1.0f;
  }
  std::vector<std::vector<float>> grads;
  std::vector<LmLossSums> sums;
  const int saved = GemmThreads();
  for (const int threads : {1, 2}) {
    SetGemmThreads(threads);
    std::vector<float> d(t * v);
    sums.push_back(LmLossForwardBackward(logits.data(), targets.data(), weights.data(), t, v,
                                         1e-4, 1.0 / t, d.data()));
    grads.push_back(d);
  }
  SetGemmThreads(saved);
  EXPECT_EQ(grads[0], grads[1]);
  EXPECT_EQ(sums[0].cross_entropy, sums[1].cross_entropy);
  EXPECT_EQ(sums[0].z_loss, sums[1].z_loss);
  EXPECT_EQ(sums[0].weight, sums[1].weight);
  EXPECT_EQ(sums[0].correct, sums[1].correct);
}

}  // namespace
}  // namespace openmoe
