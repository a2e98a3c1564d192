// Gemm (core/gemm.h) against a naive triple loop in double: every transpose combination, odd and
// zero sizes, alpha and beta, explicit leading dimensions of strided views.
#include "core/gemm.h"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

namespace openmoe {
namespace {

// Deterministic values in [-1, 1) without the RNG under test elsewhere.
std::vector<float> Fill(int64_t n, int salt) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(((i * 37 + salt * 11) % 101) / 50.5 - 1.0);
  return v;
}

// op(A)[i][p]: A stored row-major with leading dimension lda, (M, K) or, transposed, (K, M).
double OpAt(const std::vector<float>& a, bool trans, int64_t lda, int64_t i, int64_t p) {
  return trans ? a[p * lda + i] : a[i * lda + p];
}

void ExpectMatchesNaive(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, float beta,
                        int64_t pad) {
  SCOPED_TRACE(testing::Message() << "ta=" << ta << " tb=" << tb << " m=" << m << " n=" << n
                                  << " k=" << k << " alpha=" << alpha << " beta=" << beta
                                  << " pad=" << pad);
  // Leading dims: the dense ones plus `pad` unused columns (a strided view).
  const int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
  const std::vector<float> a = Fill((ta ? k : m) * lda, 1), b = Fill((tb ? n : k) * ldb, 2);
  std::vector<float> c = Fill(m * ldc, 3);
  const std::vector<float> c0 = c;
  GemmOp op{.transpose_a = ta, .transpose_b = tb, .alpha = alpha, .beta = beta};
  if (pad == 0) {
    Gemm(op, m, n, k, a.data(), b.data(), c.data());
  } else {
    Gemm(op, m, n, k, a.data(), lda, b.data(), ldb, c.data(), ldc);
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < ldc; ++j) {
      if (j >= n) {  // padding columns of C are never written
        EXPECT_EQ(c[i * ldc + j], c0[i * ldc + j]);
        continue;
      }
      double want = beta * static_cast<double>(c0[i * ldc + j]);
      for (int64_t p = 0; p < k; ++p) want += alpha * OpAt(a, ta, lda, i, p) * OpAt(b, tb, ldb, p, j);
      EXPECT_NEAR(c[i * ldc + j], want, 1e-5 * (k + 1)) << i << "," << j;
    }
  }
}

TEST(Gemm, EveryTransposeAndShapeMatchesANaiveLoop) {
  struct Shape { int64_t m, n, k; };
  for (const Shape s : {Shape{1, 1, 1}, Shape{3, 5, 7}, Shape{17, 1, 9}, Shape{1, 13, 31},
                        Shape{33, 65, 17}}) {
    for (const bool ta : {false, true})
      for (const bool tb : {false, true})
        for (const int64_t pad : {0, 3}) {
          ExpectMatchesNaive(ta, tb, s.m, s.n, s.k, 1.0f, 0.0f, pad);
          ExpectMatchesNaive(ta, tb, s.m, s.n, s.k, -0.75f, 1.0f, pad);
          ExpectMatchesNaive(ta, tb, s.m, s.n, s.k, 2.0f, 0.5f, pad);
        }
  }
}

TEST(Gemm, ZeroSizes) {
  for (const bool ta : {false, true})
    for (const bool tb : {false, true}) {
      // k == 0: C = beta * C (BLAS itself leaves C alone only for beta == 1).
      ExpectMatchesNaive(ta, tb, 4, 3, 0, 1.0f, 0.0f, 0);
      ExpectMatchesNaive(ta, tb, 4, 3, 0, 1.0f, 0.5f, 0);
      ExpectMatchesNaive(ta, tb, 4, 3, 0, 1.0f, 1.0f, 2);
      // m == 0 or n == 0: nothing to compute, nothing touched (null pointers are fine).
      GemmOp op{.transpose_a = ta, .transpose_b = tb};
      Gemm(op, 0, 3, 5, nullptr, nullptr, nullptr);
      Gemm(op, 4, 0, 5, nullptr, nullptr, nullptr);
    }
}

TEST(Gemm, BetaZeroOverwritesWithoutReadingC) {
  // C starts as NaN: with beta 0 the old contents must not leak in (0 * NaN would be NaN).
  const int64_t m = 5, n = 4, k = 3;
  const std::vector<float> a = Fill(m * k, 4), b = Fill(k * n, 5);
  for (const int64_t kk : {k, int64_t{0}}) {
    std::vector<float> c(m * n, std::numeric_limits<float>::quiet_NaN());
    Gemm(GemmOp{}, m, n, kk, a.data(), b.data(), c.data());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double want = 0;
        for (int64_t p = 0; p < kk; ++p) want += static_cast<double>(a[i * k + p]) * b[p * n + j];
        EXPECT_NEAR(c[i * n + j], want, 1e-5) << kk;
      }
  }
}

TEST(Gemm, ThreadsCanBeSetAndRead) {
  const int before = GemmThreads();
  SetGemmThreads(1);
  EXPECT_EQ(GemmThreads(), 1);
  SetGemmThreads(before);
  EXPECT_EQ(GemmThreads(), before);
}

}  // namespace
}  // namespace openmoe
