// Gemm(GemmPrecision::kBf16, ...) (core/gemm.h) against a naive double loop over the bf16-rounded
// inputs: every transpose, odd shapes, strided leading dimensions, alpha and beta, zero sizes. Run
// on every backend this CPU has: bf16-rounded copies on sgemm, oneDNN bf16 (skipped without
// AVX-512), and oneDNN f32 for kFp32 against the unrounded loop (the same oneDNN code path:
// strides, output scales, sum post-op, cache). Also: the primitive cache is hit for repeated
// shapes, oneDNN follows SetGemmThreads on any thread, and concurrent calls are safe.
//
// Tolerance: a product of two bf16 values (8-bit significands) is exact in fp32, so the only error
// left is fp32 accumulation (any order, blocked or not) plus alpha/beta: |err| <= 2 * (k + 2) *
// 2^-24 *
// (|alpha| * sum_p |a_ip||b_pj| + |beta * c_ij|), the textbook gamma_k bound with a factor 2 of
// room. A kBf16 result that skipped the rounding differs from the reference by far more (checked).
// For kFp32 on oneDNN the products round too: gamma_{k+1}, inside the same factor.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "core/bf16.h"
#include "core/gemm.h"
#include "core/onednn_gemm.h"

namespace openmoe {
namespace {

// Deterministic values in [-1, 1) with full fp32 mantissas, so rounding to bf16 matters.
std::vector<float> Fill(int64_t n, int salt) {
  std::vector<float> v(n);
  uint64_t s = 0x9E3779B97F4A7C15ull * (salt + 1);
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = static_cast<float>(static_cast<double>(s >> 11) * 0x1p-52 - 1.0);
  }
  return v;
}

// Which precision runs on which backend for one test run.
struct Config {
  std::string name;
  GemmPrecision precision;
  GemmBackend backend;
};

void PrintTo(const Config& config, std::ostream* os) { *os << config.name; }

class GemmBf16 : public testing::TestWithParam<Config> {
 protected:
  void SetUp() override {
    saved_fp32_ = ActiveGemmBackend(GemmPrecision::kFp32);
    saved_bf16_ = ActiveGemmBackend(GemmPrecision::kBf16);
    if (GetParam().backend == GemmBackend::kOneDnn && !OneDnnGemmAvailable(GetParam().precision))
      GTEST_SKIP() << "oneDNN has no matmul of this precision on this CPU";
    SetGemmBackend(GemmPrecision::kFp32, GemmBackend::kOpenBlas);
    SetGemmBackend(GetParam().precision, GetParam().backend);
  }
  void TearDown() override {
    SetGemmBackend(GemmPrecision::kFp32, saved_fp32_);
    SetGemmBackend(GemmPrecision::kBf16, saved_bf16_);
  }
  GemmBackend saved_fp32_, saved_bf16_;
};

// The precision under test; called only from inside GemmBf16 tests.
GemmPrecision Precision() { return GemmBf16::GetParam().precision; }

double OpAt(const std::vector<float>& a, bool trans, int64_t ld, int64_t i, int64_t p) {
  const float x = trans ? a[p * ld + i] : a[i * ld + p];
  return Precision() == GemmPrecision::kBf16 ? RoundToBf16(x) : x;
}

struct Case {
  bool ta, tb;
  int64_t m, n, k;
  float alpha, beta;
  int64_t pad;             // unused columns after each row: a strided view
  bool pre_round = false;  // inputs already hold bf16 values (the fallback then skips its copies)
};

void ExpectMatchesNaive(const Case& t) {
  SCOPED_TRACE(testing::Message() << "ta=" << t.ta << " tb=" << t.tb << " m=" << t.m << " n=" << t.n
                                  << " k=" << t.k << " alpha=" << t.alpha << " beta=" << t.beta
                                  << " pad=" << t.pad);
  const int64_t lda = (t.ta ? t.m : t.k) + t.pad, ldb = (t.tb ? t.k : t.n) + t.pad,
                ldc = t.n + t.pad;
  std::vector<float> a = Fill((t.ta ? t.k : t.m) * lda, 1);
  std::vector<float> b = Fill((t.tb ? t.n : t.k) * ldb, 2);
  if (t.pre_round) {
    RoundToBf16(a.data(), a.data(), static_cast<int64_t>(a.size()));
    RoundToBf16(b.data(), b.data(), static_cast<int64_t>(b.size()));
  }
  std::vector<float> c = Fill(t.m * ldc, 3);
  const std::vector<float> c0 = c, a0 = a, b0 = b;
  const GemmOp op{.transpose_a = t.ta, .transpose_b = t.tb, .alpha = t.alpha, .beta = t.beta};
  if (t.pad == 0) {
    Gemm(Precision(), op, t.m, t.n, t.k, a.data(), b.data(), c.data());
  } else {
    Gemm(Precision(), op, t.m, t.n, t.k, a.data(), lda, b.data(), ldb, c.data(), ldc);
  }
  EXPECT_EQ(a, a0);  // inputs are not rounded in place
  EXPECT_EQ(b, b0);
  for (int64_t i = 0; i < t.m; ++i) {
    for (int64_t j = 0; j < ldc; ++j) {
      if (j >= t.n) {
        ASSERT_EQ(c[i * ldc + j], c0[i * ldc + j]) << "padding column written";
        continue;
      }
      const double c_term = t.beta == 0.0f ? 0.0 : t.beta * static_cast<double>(c0[i * ldc + j]);
      double dot = 0.0, abs_dot = 0.0;
      for (int64_t p = 0; p < t.k; ++p) {
        const double prod = OpAt(a, t.ta, lda, i, p) * OpAt(b, t.tb, ldb, p, j);
        dot += prod;
        abs_dot += std::fabs(prod);
      }
      const double want = t.alpha * dot + c_term;
      const double tol =
          2.0 * (t.k + 2) * 0x1p-24 * (std::fabs(t.alpha) * abs_dot + std::fabs(c_term)) + 1e-30;
      ASSERT_NEAR(c[i * ldc + j], want, tol) << i << "," << j;
    }
  }
}

TEST_P(GemmBf16, EveryTransposeAndOddShapeMatchesANaiveLoopOverRoundedInputs) {
  struct Shape {
    int64_t m, n, k;
  };
  for (const Shape s : {Shape{1, 1, 1}, Shape{3, 5, 7}, Shape{17, 1, 9}, Shape{1, 13, 31},
                        Shape{33, 65, 17}, Shape{129, 17, 3}, Shape{3, 129, 129},
                        // every dimension in three oneDNN pieces (128 + 16 + 3, ...)
                        Shape{147, 45 + 128, 291}})
    for (const bool ta : {false, true})
      for (const bool tb : {false, true})
        ExpectMatchesNaive({ta, tb, s.m, s.n, s.k, 1.0f, 0.0f, 0});
}

TEST_P(GemmBf16, StridedViewsAlphaAndBeta) {
  for (const bool ta : {false, true})
    for (const bool tb : {false, true})
      for (const float alpha : {1.0f, 0.125f, -1.7f})
        for (const float beta : {0.0f, 1.0f})
          for (const int64_t pad : {int64_t{0}, int64_t{5}})
            ExpectMatchesNaive({ta, tb, 17, 33, 129, alpha, beta, pad});
}

TEST_P(GemmBf16, InputsThatAreAlreadyBf16) {
  for (const bool ta : {false, true})
    for (const bool tb : {false, true})
      for (const int64_t pad : {int64_t{0}, int64_t{3}})
        ExpectMatchesNaive({ta, tb, 19, 35, 131, 0.5f, 1.0f, pad, /*pre_round=*/true});
}

TEST_P(GemmBf16, ZeroSizeDimensions) {
  // k = 0: C = beta * C (0 overwrites, even NaN garbage).
  for (const float beta : {0.0f, 1.0f, 0.5f}) {
    std::vector<float> c = {1.0f, NAN, -3.0f, 4.0f, 5.0f, 6.0f};
    const std::vector<float> c0 = c;
    Gemm(Precision(), GemmOp{.beta = beta}, 2, 3, 0, nullptr, nullptr, c.data());
    for (size_t i = 0; i < c.size(); ++i) {
      if (beta == 0.0f) {
        EXPECT_EQ(c[i], 0.0f) << i;
      } else if (!std::isnan(c0[i])) {
        EXPECT_EQ(c[i], beta * c0[i]) << i;
      }
    }
  }
  // m = 0 or n = 0: nothing to write, nothing read.
  std::vector<float> untouched = {7.0f};
  Gemm(Precision(), GemmOp{}, 0, 1, 4, nullptr, nullptr, untouched.data());
  Gemm(Precision(), GemmOp{}, 1, 0, 4, nullptr, nullptr, untouched.data());
  EXPECT_EQ(untouched[0], 7.0f);
}

TEST_P(GemmBf16, InputsAreRoundedOnlyInBf16) {
  // 1 + 2^-9 rounds to 1 in bf16: a k-long dot of such values is k in bf16, k * (1 + 2^-9)^2 in
  // fp32.
  const int64_t k = 64;
  const std::vector<float> a(k, 1.0f + 0x1p-9f), b(k, 1.0f + 0x1p-9f);
  float c = -1.0f;
  Gemm(Precision(), GemmOp{}, 1, 1, k, a.data(), b.data(), &c);
  if (Precision() == GemmPrecision::kBf16) {
    EXPECT_EQ(c, static_cast<float>(k));
  } else {
    EXPECT_NEAR(c, k * (1.0 + 0x1p-9) * (1.0 + 0x1p-9), 1e-4);
  }
}

TEST_P(GemmBf16, NonFiniteInputsPropagate) {
  // A NaN in A must reach C (a bf16 conversion that turned NaN into inf or 0 would not).
  const std::vector<float> a = {NAN, 1.0f}, b = {1.0f, 1.0f};
  float c = 0.0f;
  Gemm(Precision(), GemmOp{}, 1, 1, 2, a.data(), b.data(), &c);
  EXPECT_TRUE(std::isnan(c));
  const std::vector<float> big = {3e38f,
                                  3e38f};  // 3e38 < bf16 max: kept; the sum overflows in fp32
  Gemm(Precision(), GemmOp{}, 1, 1, 2, big.data(), b.data(), &c);
  EXPECT_EQ(c, INFINITY);
}

TEST_P(GemmBf16, ConcurrentCallsFromSeveralThreads) {
  const int64_t m = 33, n = 17, k = 65;
  const std::vector<float> a = Fill(m * k, 4), b = Fill(k * n, 5);
  std::vector<float> want(m * n);
  Gemm(Precision(), GemmOp{}, m, n, k, a.data(), b.data(), want.data());
  std::vector<std::vector<float>> got(4, std::vector<float>(m * n));
  std::vector<std::thread> threads;
  for (auto& out : got)
    threads.emplace_back([&, &out = out] {
      for (int rep = 0; rep < 20; ++rep)
        Gemm(Precision(), GemmOp{}, m, n, k, a.data(), b.data(), out.data());
    });
  for (auto& t : threads) t.join();
  for (const auto& out : got) EXPECT_EQ(out, want);  // same shape, same primitive: same bits
}

INSTANTIATE_TEST_SUITE_P(
    Backends, GemmBf16,
    testing::Values(Config{"Bf16RoundedSgemm", GemmPrecision::kBf16, GemmBackend::kOpenBlas},
                    Config{"Bf16OneDnn", GemmPrecision::kBf16, GemmBackend::kOneDnn},
                    Config{"Fp32OneDnn", GemmPrecision::kFp32, GemmBackend::kOneDnn}),
    [](const testing::TestParamInfo<Config>& info) { return info.param.name; });

// The oneDNN precisions this CPU runs, for the tests that talk to oneDNN directly.
std::vector<GemmPrecision> OneDnnPrecisions() {
  std::vector<GemmPrecision> out;
  for (const GemmPrecision p : {GemmPrecision::kFp32, GemmPrecision::kBf16})
    if (OneDnnGemmAvailable(p)) out.push_back(p);
  return out;
}

TEST(OneDnnGemm, RepeatedShapesHitThePrimitiveCache) {
  for (const GemmPrecision precision : OneDnnPrecisions()) {
    // A shape no other test uses, so the first call is a miss whatever ran before.
    const int64_t m = 7, n = 11, k = 384;  // each one oneDNN piece
    const std::vector<float> a = Fill(m * k, 6), b = Fill(k * n, 7);
    std::vector<float> c(m * n);
    const OneDnnGemmCacheStats before = GetOneDnnGemmCacheStats();
    const GemmOp op{.alpha = precision == GemmPrecision::kBf16 ? 0.5f : 0.25f};
    OneDnnGemm(precision, op, m, n, k, a.data(), k, b.data(), n, c.data(), n);
    const OneDnnGemmCacheStats first = GetOneDnnGemmCacheStats();
    EXPECT_EQ(first.primitives_created, before.primitives_created + 1);
    for (int rep = 0; rep < 5; ++rep)
      OneDnnGemm(precision, op, m, n, k, a.data(), k, b.data(), n, c.data(), n);
    const OneDnnGemmCacheStats repeated = GetOneDnnGemmCacheStats();
    EXPECT_EQ(repeated.primitives_created, first.primitives_created);
    EXPECT_EQ(repeated.cache_hits, first.cache_hits + 5);
    // Another beta is another primitive (the sum post-op is baked in).
    OneDnnGemm(precision, GemmOp{.alpha = op.alpha, .beta = 1.0f}, m, n, k, a.data(), k, b.data(),
               n, c.data(), n);
    EXPECT_EQ(GetOneDnnGemmCacheStats().primitives_created, first.primitives_created + 1);
  }
}

TEST(OneDnnGemm, VaryingRowCountsShareABoundedSetOfPrimitives) {
  for (const GemmPrecision precision : OneDnnPrecisions()) {
    // Row counts 1..300 of a (rows, 24) x (24, 8) product, as tokens per expert vary by step:
    // pieces of 128 or 256 rows, 16..112 rows and 1..15 rows, i.e. at most 2 + 7 + 15 shapes
    // for the 16-column piece and as many for the 8 remaining columns.
    const int64_t n = 24, k = 40;
    const std::vector<float> a = Fill(300 * k, 10), b = Fill(k * n, 11);
    const OneDnnGemmCacheStats before = GetOneDnnGemmCacheStats();
    std::vector<float> c(300 * n);
    for (int64_t m = 1; m <= 300; ++m) {
      OneDnnGemm(precision, GemmOp{.alpha = 0.75f}, m, n, k, a.data(), k, b.data(), n, c.data(), n);
      for (const int64_t i : {int64_t{0}, m - 1}) {  // first and last row against a direct sum
        for (int64_t j = 0; j < n; ++j) {
          double want = 0.0, abs_sum = 0.0;
          for (int64_t p = 0; p < k; ++p) {
            const double x =
                precision == GemmPrecision::kBf16 ? RoundToBf16(a[i * k + p]) : a[i * k + p];
            const double y =
                precision == GemmPrecision::kBf16 ? RoundToBf16(b[p * n + j]) : b[p * n + j];
            want += 0.75 * x * y;
            abs_sum += std::fabs(0.75 * x * y);
          }
          ASSERT_NEAR(c[i * n + j], want, 2.0 * (k + 2) * 0x1p-24 * abs_sum)
              << m << " " << i << "," << j;
        }
      }
    }
    // k = 40 is two pieces (32 + 8), the second accumulating with beta 1: x2 per row/column shape.
    EXPECT_LE(GetOneDnnGemmCacheStats().primitives_created - before.primitives_created,
              (2 + 7 + 15) * 2 * 2);
  }
}

TEST(OneDnnGemm, FollowsSetGemmThreadsOnEveryThread) {
  if (OneDnnPrecisions().empty()) GTEST_SKIP() << "no oneDNN matmul on this CPU";
  const int before = GemmThreads();
  SetGemmThreads(1);
  std::thread other([&] {
    omp_set_num_threads(3);  // a stale per-thread OpenMP setting
    const std::vector<float> a = Fill(9, 8), b = Fill(9, 9);
    std::vector<float> c(9);
    OneDnnGemm(OneDnnPrecisions()[0], GemmOp{}, 3, 3, 3, a.data(), 3, b.data(), 3, c.data(), 3);
    EXPECT_EQ(omp_get_max_threads(), 1);
  });
  other.join();
  SetGemmThreads(before);
}

TEST(OneDnnGemm, ReportsTheImplementationItPicked) {
  for (const GemmPrecision precision : OneDnnPrecisions())
    EXPECT_FALSE(OneDnnGemmImplementation(precision, GemmOp{}, 64, 64, 64, 64, 64, 64).empty());
}

TEST(GemmBackends, DefaultsFollowTheCpu) {
  EXPECT_EQ(ActiveGemmBackend(GemmPrecision::kFp32), GemmBackend::kOpenBlas);
  // Only meaningful before any test overrode it; the fixture restores what it found.
  if (CpuHasAvx512Bf16()) {
    EXPECT_EQ(ActiveGemmBackend(GemmPrecision::kBf16), GemmBackend::kOneDnn);
  } else {
    EXPECT_EQ(ActiveGemmBackend(GemmPrecision::kBf16), GemmBackend::kOpenBlas);
  }
}

}  // namespace
}  // namespace openmoe

namespace openmoe {
namespace {

// Operands stored as bf16 (GemmInput) give Gemm(kBf16) with their values as floats, bit for bit,
// on each bf16 backend this CPU has, for A, B or both so stored, every transpose, strided operands
// and accumulation into C.
TEST(GemmBf16Inputs, EqualGemmBf16OnTheSameValuesBitForBit) {
  const GemmBackend saved = ActiveGemmBackend(GemmPrecision::kBf16);
  for (const GemmBackend backend : {GemmBackend::kOpenBlas, GemmBackend::kOneDnn}) {
    if (backend == GemmBackend::kOneDnn && !OneDnnGemmAvailable(GemmPrecision::kBf16)) continue;
    SetGemmBackend(GemmPrecision::kBf16, backend);
    for (const bool ta : {false, true}) {
      for (const bool tb : {false, true}) {
        for (const int stored : {1, 2, 3}) {  // bit 0: A as bf16, bit 1: B as bf16
          const int64_t m = 37, n = 150, k = 131, pad = 5;
          const int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad;
          std::vector<float> a = Fill((ta ? k : m) * lda, 1), b = Fill((tb ? n : k) * ldb, 2);
          const std::vector<float> c0 = Fill(m * n, 3);
          std::vector<uint16_t> a16(a.size()), b16(b.size());
          FloatToBf16(a.data(), a16.data(), static_cast<int64_t>(a.size()));
          FloatToBf16(b.data(), b16.data(), static_cast<int64_t>(b.size()));
          RoundToBf16(a.data(), a.data(), static_cast<int64_t>(a.size()));
          RoundToBf16(b.data(), b.data(), static_cast<int64_t>(b.size()));
          const GemmOp op{.transpose_a = ta, .transpose_b = tb, .beta = 1.0f};
          std::vector<float> want = c0, got = c0;
          Gemm(GemmPrecision::kBf16, op, m, n, k, a.data(), lda, b.data(), ldb, want.data(), n);
          const GemmInput a_in =
              (stored & 1) != 0 ? GemmInput(a16.data(), lda) : GemmInput(a.data(), lda);
          const GemmInput b_in =
              (stored & 2) != 0 ? GemmInput(b16.data(), ldb) : GemmInput(b.data(), ldb);
          Gemm(GemmPrecision::kBf16, op, m, n, k, a_in, b_in, got.data(), n);
          EXPECT_EQ(got, want) << "backend " << static_cast<int>(backend) << " ta " << ta << " tb "
                               << tb << " stored " << stored;
        }
      }
    }
  }
  SetGemmBackend(GemmPrecision::kBf16, saved);
}

}  // namespace
}  // namespace openmoe
