#include "core/bf16_pair_gemm.h"

#include <cmath>
#include <vector>

#include "core/bf16.h"
#include "gtest/gtest.h"

namespace openmoe {
namespace {

std::vector<float> Values(int64_t n, int seed) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i)
    v[i] = static_cast<float>(std::sin(0.7 * static_cast<double>(i) + seed) * 1.5 + 0.1 * seed);
  return v;
}

// C = op(X) op(Y) in double over the bf16-rounded inputs: the independent route.
struct Problem {
  int64_t m, n, k;
};

std::vector<double> Naive(const Problem& pr, const std::vector<float>& a_mk,
                          const std::vector<float>& b_kn) {
  std::vector<double> c(pr.m * pr.n, 0.0);
  for (int64_t i = 0; i < pr.m; ++i)
    for (int64_t j = 0; j < pr.n; ++j)
      for (int64_t l = 0; l < pr.k; ++l)
        c[i * pr.n + j] += static_cast<double>(RoundToBf16(a_mk[i * pr.k + l])) *
                           static_cast<double>(RoundToBf16(b_kn[l * pr.n + j]));
  return c;
}

void ExpectNear(const std::vector<double>& want, const float* got, int64_t rows, int64_t cols,
                int64_t ldc, double k) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      ASSERT_NEAR(got[i * ldc + j], want[i * cols + j], 1e-5 * k * 3.0)
          << "row " << i << " col " << j;
}

// Every kernel this build and CPU have (AMX, VDPBF16PS, the portable loop), one after another.
template <typename Fn>
void ForEachKernel(Fn fn) {
  const Bf16PairKernel saved = ActiveBf16PairKernel();
  for (const Bf16PairKernel kernel :
       {Bf16PairKernel::kAmx, Bf16PairKernel::kAvx512Bf16, Bf16PairKernel::kPortable}) {
    if (!Bf16PairKernelAvailable(kernel)) continue;
    SCOPED_TRACE(Bf16PairKernelName(kernel));
    SetBf16PairKernel(kernel);
    fn();
  }
  SetBf16PairKernel(saved);
}

// The (cols, rows) transpose of a row-major (rows, cols) matrix.
std::vector<float> Transposed(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<float> t(x.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[j * rows + i] = x[i * cols + j];
  return t;
}

class Bf16PairGemmTest : public ::testing::TestWithParam<Problem> {};

// A given as rows (k along columns), B given as x^T of an (n, k) matrix: the score tile q k^T.
TEST_P(Bf16PairGemmTest, RowPairsTimesTransposedRowPairs) {
  const Problem pr = GetParam();
  const int64_t kp = (pr.k + 1) / 2;
  const std::vector<float> a = Values(pr.m * pr.k, 1), bt = Values(pr.n * pr.k, 2);
  const std::vector<float> b = Transposed(bt, pr.n, pr.k);
  std::vector<uint32_t> ap(pr.m * kp), bp(kp * pr.n);
  PackPairsAlongRows(a.data(), pr.k, pr.m, pr.k, ap.data(), kp);
  PackPairsAlongRowsTransposed(bt.data(), pr.k, pr.n, pr.k, bp.data(), pr.n);
  const int64_t ldc = pr.n + 3;
  ForEachKernel([&] {
    std::vector<float> c(pr.m * ldc, 7.0f);
    Bf16PairGemm(pr.m, pr.n, kp, ap.data(), kp, bp.data(), pr.n, c.data(), ldc, false);
    ExpectNear(Naive(pr, a, b), c.data(), pr.m, pr.n, ldc, static_cast<double>(pr.k));
    for (int64_t i = 0; i < pr.m; ++i)  // the padding columns of C are not written
      for (int64_t j = pr.n; j < ldc; ++j) ASSERT_EQ(c[i * ldc + j], 7.0f);
  });
}

// A given as x^T of a (k, m) matrix, B given down columns: dV += P^T dO and dK += dS^T q; with
// accumulation into C.
TEST_P(Bf16PairGemmTest, TransposedColumnPairsTimesColumnPairsAccumulates) {
  const Problem pr = GetParam();
  const int64_t kp = (pr.k + 1) / 2;
  const std::vector<float> at = Values(pr.k * pr.m, 3), b = Values(pr.k * pr.n, 4);
  const std::vector<float> a = Transposed(at, pr.k, pr.m);
  std::vector<uint32_t> ap(pr.m * kp), bp(kp * pr.n);
  PackPairsDownColumnsTransposed(at.data(), pr.m, pr.k, pr.m, ap.data(), kp);
  PackPairsDownColumns(b.data(), pr.n, pr.k, pr.n, bp.data(), pr.n);
  ForEachKernel([&] {
    std::vector<float> c(pr.m * pr.n);
    for (int64_t i = 0; i < pr.m * pr.n; ++i) c[i] = 0.25f * static_cast<float>(i % 5);
    std::vector<double> want = Naive(pr, a, b);
    for (int64_t i = 0; i < pr.m * pr.n; ++i) want[i] += c[i];
    Bf16PairGemm(pr.m, pr.n, kp, ap.data(), kp, bp.data(), pr.n, c.data(), pr.n, true);
    ExpectNear(want, c.data(), pr.m, pr.n, pr.n, static_cast<double>(pr.k));
  });
}

// Odd k (the pad element is zero on both sides), n not a multiple of 16 or above 64, m not a
// multiple of the 4-row register block.
INSTANTIATE_TEST_SUITE_P(Shapes, Bf16PairGemmTest,
                         ::testing::Values(Problem{64, 64, 64}, Problem{1, 1, 1},
                                           Problem{7, 17, 5}, Problem{3, 80, 33},
                                           Problem{66, 130, 64}, Problem{5, 16, 128},
                                           Problem{64, 48, 63}, Problem{32, 32, 32},
                                           Problem{48, 96, 100}, Problem{17, 33, 31}));

TEST(Bf16PairGemm, PackersRoundToNearestEven) {
  // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties to even gives 1.0.
  const float x[4] = {1.0f + 1.0f / 256.0f, 3.0f, -2.5f, 1.0f + 3.0f / 256.0f};
  uint32_t out[2];
  PackPairsAlongRows(x, 4, 1, 4, out, 2);
  EXPECT_EQ(out[0] & 0xFFFFu, FloatToBf16(1.0f));
  EXPECT_EQ(out[0] >> 16, FloatToBf16(3.0f));
  EXPECT_EQ(out[1] >> 16, FloatToBf16(1.0f + 4.0f / 256.0f));
}

// A build for this CPU must have a bf16 kernel where the CPU has AVX512-BF16 (a lost -march flag
// would silently leave the portable loop).
TEST(Bf16PairGemm, RunsANativeKernelWhereTheCpuHasAvx512Bf16) {
  if (!CpuHasAvx512Bf16()) GTEST_SKIP() << "no AVX512-BF16 here: the portable fp32 loop runs";
  EXPECT_TRUE(Bf16PairKernelAvailable(Bf16PairKernel::kAvx512Bf16));
  EXPECT_NE(ActiveBf16PairKernel(), Bf16PairKernel::kPortable);
}

}  // namespace
}  // namespace openmoe
