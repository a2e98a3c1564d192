// GradReducer under mpirun (2 and 4 ranks): bucketed, overlapped sums against a naive sum in the
// test, the BF16 wire against its definition computed here, bucket edges inside marked ranges,
// the unthreaded progress path, and the blocking path bit for bit.
#include "parallel/grad_reducer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/bf16.h"
#include "gtest/gtest.h"
#include "parallel/communicator.h"

namespace openmoe {
namespace {

std::vector<float> Filled(int rank);

// Rank r's gradient element i: distinct per rank and element, with a spread of magnitudes. Read
// from one table, so that every use sees the same bits (an expression recomputed at several call
// sites may be contracted into FMAs differently).
float Value(int rank, int64_t i) {
  static const std::vector<std::vector<float>> table = [] {
    std::vector<std::vector<float>> t;
    for (int r = 0; r < 64; ++r) t.push_back(Filled(r));
    return t;
  }();
  return table[rank][i];
}

constexpr int64_t kElements = 1000;
constexpr int64_t kSplit = 600;  // [0, 600) over the world, [600, 1000) over pairs of ranks

struct Groups {
  std::unique_ptr<Communicator> world = MakeWorldCommunicator();
  std::unique_ptr<Communicator> pair = world->Split(world->rank() / 2, world->rank());
  std::unique_ptr<Communicator> world_dup = world->Duplicate();
  std::unique_ptr<Communicator> pair_dup = pair->Duplicate();
  std::vector<GradRegion> Regions() {
    return {{0, kSplit, world_dup.get()}, {kSplit, kElements, pair_dup.get()}};
  }
  // The ranks element i is summed over.
  std::vector<int> Ranks(int64_t i) const {
    if (i < kSplit) {
      std::vector<int> all(world->size());
      for (int q = 0; q < world->size(); ++q) all[q] = q;
      return all;
    }
    const int first = world->rank() / 2 * 2;
    std::vector<int> ranks = {first};
    if (first + 1 < world->size()) ranks.push_back(first + 1);
    return ranks;
  }
};

std::vector<float> Filled(int rank) {
  std::vector<float> g(kElements);
  for (int64_t i = 0; i < kElements; ++i)
    g[i] = std::sin(0.37f * static_cast<float>(i) + 1.3f * rank) *
           std::exp2(static_cast<float>(i % 7) - 3);
  return g;
}

// Marks the buffer final as a backward would: from the top down, in ranges of uneven sizes that
// straddle the bucket edges; each region's ranges interleaved with the other's.
void MarkLikeABackward(GradReducer* reducer) {
  const int64_t sizes[] = {37, 101, 3, 250, 64};
  int64_t top_shared = kSplit, top_expert = kElements;
  for (int k = 0; top_shared > 0 || top_expert > kSplit; ++k) {
    const int64_t n = sizes[k % 5];
    const int64_t a = std::min(n, top_shared);
    if (a > 0) reducer->GradientsFinal(top_shared - a, a);
    top_shared -= a;
    const int64_t b = std::min(n, top_expert - kSplit);
    if (b > 0) reducer->GradientsFinal(top_expert - b, b);
    top_expert -= b;
  }
}

TEST(GradReducerMpi, OverlappedBucketsSumLikeANaiveLoop) {
  Groups s;
  for (bool threaded : {true, false}) {
    CommThread thread(threaded && s.world->ThreadSafe());
    GradReducerOptions o;
    o.bucket_floats = 90;
    o.first_bucket_floats = 25;
    std::vector<float> g = Filled(s.world->rank());
    GradReducer reducer(g.data(), s.Regions(), o, &thread);
    for (int step = 0; step < 2; ++step) {  // the second step reuses every bucket
      const std::vector<float> fresh = Filled(s.world->rank());
      std::copy(fresh.begin(), fresh.end(), g.begin());  // in place: the reducer holds g's data
      reducer.BeginStep();
      MarkLikeABackward(&reducer);
      reducer.FinishStep();
      // Every bucket became complete during the marks, so all started before FinishStep.
      EXPECT_EQ(reducer.started_early().size(), reducer.buckets().size());
      for (int64_t i = 0; i < kElements; ++i) {
        float want = 0;
        for (int q : s.Ranks(i)) want += Value(q, i);
        if (s.Ranks(i).size() <= 2) {
          ASSERT_EQ(g[i], want) << "element " << i << " threaded " << threaded;
        } else {
          ASSERT_NEAR(g[i], want, 1e-6f * (1 + std::fabs(want))) << "element " << i;
        }
      }
    }
  }
}

TEST(GradReducerMpi, BucketPlanFromTheTopWithEdgesInsideRanges) {
  Groups s;
  CommThread thread(false);
  GradReducerOptions o;
  o.bucket_floats = 90;
  o.first_bucket_floats = 25;
  std::vector<float> g(kElements);
  GradReducer reducer(g.data(), s.Regions(), o, &thread);
  // Region 0 (world, size >= 2): [575, 600), then 90-float buckets down, the last [0, 35).
  const auto& b = reducer.buckets();
  ASSERT_GE(b.size(), 8u);
  EXPECT_EQ(b[0].begin, 575);
  EXPECT_EQ(b[0].end, 600);
  EXPECT_EQ(b[1].begin, 485);
  EXPECT_EQ(b[1].end, 575);
  EXPECT_EQ(b[7].begin, 0);
  EXPECT_EQ(b[7].end, 35);
  for (const auto& bucket : b) EXPECT_LE(bucket.end - bucket.begin, 90);
  // A range covering part of a bucket does not start it; the rest does.
  reducer.BeginStep();
  reducer.GradientsFinal(580, 20);
  EXPECT_TRUE(reducer.started_early().empty());
  reducer.GradientsFinal(575, 5);
  ASSERT_EQ(reducer.started_early().size(), 1u);
  EXPECT_EQ(reducer.started_early()[0], 0);
  reducer.FinishStep();
}

TEST(GradReducerMpi, BlockingAndOverlappedAgreeBitForBitOnTwoRanks) {
  Groups s;
  if (s.world->size() != 2) GTEST_SKIP() << "2 ranks: each sum is one commutative addition";
  CommThread thread(s.world->ThreadSafe());
  GradReducerOptions blocking;
  blocking.overlap = false;
  GradReducerOptions overlapped;
  overlapped.bucket_floats = 64;
  overlapped.first_bucket_floats = 7;
  std::vector<float> a = Filled(s.world->rank()), b = a;
  GradReducer ra(a.data(), s.Regions(), blocking, &thread);
  GradReducer rb(b.data(), s.Regions(), overlapped, &thread);
  ra.BeginStep();
  MarkLikeABackward(&ra);
  ra.FinishStep();
  EXPECT_TRUE(ra.started_early().empty());
  rb.BeginStep();
  MarkLikeABackward(&rb);
  rb.FinishStep();
  for (int64_t i = 0; i < kElements; ++i) ASSERT_EQ(a[i], b[i]) << i;
}

// BF16 wire: element i of block k (its owner is rank k of the region) is the fp32 sum, in rank
// order, of the owner's own value and the others' bf16-rounded values, rounded to bf16 once.
TEST(GradReducerMpi, Bf16WireSumsInFp32AndRoundsOnce) {
  Groups s;
  for (bool overlap : {true, false}) {
    CommThread thread(s.world->ThreadSafe());
    GradReducerOptions o;
    o.overlap = overlap;
    o.bucket_floats = 77;
    o.first_bucket_floats = 13;
    o.wire = GradWire::kBf16;
    std::vector<float> g = Filled(s.world->rank());
    GradReducer reducer(g.data(), s.Regions(), o, &thread);
    reducer.BeginStep();
    MarkLikeABackward(&reducer);
    reducer.FinishStep();
    if (s.world->size() > 1) {
      EXPECT_GT(reducer.held_bytes(), 0);
    }
    for (const auto& bucket : reducer.buckets()) {
      const std::vector<int> ranks = s.Ranks(bucket.begin);
      const int64_t n = bucket.end - bucket.begin;
      const int64_t block = (n + ranks.size() - 1) / ranks.size();
      for (int64_t j = 0; j < n; ++j) {
        const int owner = ranks[j / block];
        const int64_t i = bucket.begin + j;
        float sum = 0;
        for (int q : ranks) sum += q == owner ? Value(q, i) : RoundToBf16(Value(q, i));
        ASSERT_EQ(g[i], RoundToBf16(sum)) << "element " << i << " overlap " << overlap;
      }
    }
    // Every rank of the world region holds the same bits: its maximum and minimum over ranks.
    std::vector<float> high(g.begin(), g.begin() + kSplit), low(kSplit);
    for (int64_t i = 0; i < kSplit; ++i) low[i] = -g[i];
    s.world->AllReduceMax(high.data(), kSplit);
    s.world->AllReduceMax(low.data(), kSplit);
    for (int64_t i = 0; i < kSplit; ++i) ASSERT_TRUE(high[i] == g[i] && -low[i] == g[i]) << i;
  }
}

// A sparse range: 20 rows of 10 floats at [100, 300) of the world region, of which rank q writes
// the rows r with (r + q) % 6 == 0 (zero elsewhere; on 4 ranks rows r % 6 in {1, 2} stay unwritten):
// only the union's rows cross the link, and every element is the naive sum of what the ranks
// wrote (bit for bit on 2 ranks). Then a step in which no rank writes a row, and one that does not
// say (every row).
TEST(GradReducerMpi, SparseRowsSumOnlyTheRowsSomeRankWrote) {
  Groups s;
  const SparseRows range{.begin = 100, .rows = 20, .row_floats = 10};
  auto writes = [](int q, int64_t row) { return (row + q) % 6 == 0; };
  auto written = [&](int q, int64_t i) {
    const bool in_range = i >= 100 && i < 300;
    return in_range ? (writes(q, (i - 100) / 10) ? Value(q, i) : 0.0f) : Value(q, i);
  };
  for (const GradWire wire : {GradWire::kFp32, GradWire::kBf16}) {
    CommThread thread(s.world->ThreadSafe());
    GradReducerOptions o;
    o.bucket_floats = 64;
    o.first_bucket_floats = 7;
    o.wire = wire;
    std::vector<float> g(kElements);
    GradReducer reducer(g.data(), s.Regions(), o, &thread, {range});
    int sparse_buckets = 0;
    for (const auto& b : reducer.buckets()) {
      EXPECT_TRUE(b.end <= range.begin || b.begin >= 300 || (b.sparse && b.begin == 100 && b.end == 300));
      sparse_buckets += b.sparse ? 1 : 0;
    }
    EXPECT_EQ(sparse_buckets, s.world->size() > 1 ? 1 : 0);
    for (int mode = 0; mode < 3; ++mode) {  // rows as above; no rows; not said (every row)
      for (int64_t i = 0; i < kElements; ++i)
        g[i] = mode == 0 ? written(s.world->rank(), i)
                         : (i >= 100 && i < 300 ? (mode == 1 ? 0.0f : Value(s.world->rank(), i))
                                                : Value(s.world->rank(), i));
      reducer.BeginStep();
      std::vector<int64_t> rows;
      for (int64_t r = 0; r < range.rows; ++r)
        if (writes(s.world->rank(), r)) rows.push_back(r);
      if (mode == 0) reducer.SetRowsWritten(range.begin, rows);
      if (mode == 1) reducer.SetRowsWritten(range.begin, {});
      MarkLikeABackward(&reducer);
      reducer.FinishStep();
      if (s.world->size() == 1) continue;
      int64_t union_rows = 0;
      for (int64_t r = 0; r < range.rows; ++r) {
        bool any = mode == 2;
        for (int q = 0; q < s.world->size(); ++q) any = any || (mode == 0 && writes(q, r));
        union_rows += any ? 1 : 0;
      }
      EXPECT_EQ(reducer.sparse_floats_sent(), union_rows * range.row_floats) << "mode " << mode;
      if (mode == 0) {
        EXPECT_LT(union_rows, range.rows);
      }
      for (int64_t i = 100; i < 300; ++i) {
        const std::vector<int> ranks = s.Ranks(i);
        auto term = [&](int q) {
          return mode == 0 ? written(q, i) : (mode == 1 ? 0.0f : Value(q, i));
        };
        if (wire == GradWire::kBf16) {
          ASSERT_NEAR(g[i], [&] { float t = 0; for (int q : ranks) t += term(q); return t; }(),
                      0.02f * (1 + std::fabs(g[i])))
              << i;
          continue;
        }
        float want = term(ranks[0]);
        for (size_t k = 1; k < ranks.size(); ++k) want += term(ranks[k]);
        if (ranks.size() <= 2) {
          ASSERT_EQ(g[i], want) << "element " << i << " mode " << mode;
        } else {
          ASSERT_NEAR(g[i], want, 1e-6f * (1 + std::fabs(want))) << "element " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace openmoe
