#include "core/parallel_for.h"

#include <atomic>
#include <thread>
#include <vector>

#include "core/gemm.h"
#include "gtest/gtest.h"

namespace openmoe {
namespace {

class ParallelForTest : public ::testing::Test {
 protected:
  ParallelForTest() : saved_(GemmThreads()) { SetGemmThreads(2); }
  ~ParallelForTest() override { SetGemmThreads(saved_); }
  int saved_;
};

// Every index is visited exactly once, in ranges of at least min_chunk (but the last), for sizes
// around the inline threshold and far above it.
TEST_F(ParallelForTest, CoversEveryIndexOnceInRangesOfAtLeastMinChunk) {
  for (const int64_t n : {0, 1, 7, 15, 16, 17, 1000, 100003}) {
    std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
    std::atomic<int64_t> short_ranges{0};
    ParallelFor(n, 8, [&](int64_t begin, int64_t end) {
      ASSERT_LT(begin, end);
      if (end - begin < 8 && end != n) short_ranges.fetch_add(1);
      for (int64_t i = begin; i < end; ++i) seen[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << "n " << n << " index " << i;
    EXPECT_EQ(short_ranges.load(), 0) << "n " << n;
  }
}

// Below 2 * min_chunk, with one GEMM thread, and inside another ParallelFor the loop runs inline:
// one call on the calling thread.
TEST_F(ParallelForTest, RunsInlineWhenSmallSingleThreadedOrNested) {
  const std::thread::id me = std::this_thread::get_id();
  int calls = 0;
  ParallelFor(15, 8, [&](int64_t b, int64_t e) {
    ++calls;
    EXPECT_EQ(std::this_thread::get_id(), me);
    EXPECT_EQ(b, 0);
    EXPECT_EQ(e, 15);
  });
  EXPECT_EQ(calls, 1);
  SetGemmThreads(1);
  calls = 0;
  ParallelFor(1 << 20, 8, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 1);
  SetGemmThreads(2);
  std::atomic<int> inner_calls{0}, outer_ranges{0};
  ParallelFor(64, 1, [&](int64_t, int64_t) {
    outer_ranges.fetch_add(1);
    const std::thread::id here = std::this_thread::get_id();
    ParallelFor(1000, 1, [&](int64_t b, int64_t e) {
      inner_calls.fetch_add(1);
      EXPECT_EQ(std::this_thread::get_id(), here);
      EXPECT_EQ(e - b, 1000);
    });
  });
  EXPECT_EQ(inner_calls.load(), outer_ranges.load());
}

// Many calls back to back from two threads at once (serialised on the one pool) all complete.
TEST_F(ParallelForTest, ConcurrentCallersAllComplete) {
  std::atomic<int64_t> total{0};
  auto caller = [&] {
    for (int round = 0; round < 200; ++round)
      ParallelFor(4096, 64, [&](int64_t b, int64_t e) { total.fetch_add(e - b); });
  };
  std::thread other(caller);
  caller();
  other.join();
  EXPECT_EQ(total.load(), 2 * 200 * 4096);
}

}  // namespace
}  // namespace openmoe
