// The guard of the timed tests (tests/testing/hang_guard.h, used by bounded_run.h and
// child_process.h) on real failures: the `openmoe` binary blocked forever (its --job a FIFO that
// nobody writes, as `--job <(cmd)` is when cmd never writes), alone or as ranks under mpirun, is
// stopped as a hang within the stall window, long before the wall backstop, and not as CPU
// exhaustion; a busy loop is stopped as CPU exhaustion, not as a hang, though a busy machine gives
// it only part of a core.
#include <sys/stat.h>

#include <set>
#include <string>

#include "gtest/gtest.h"
#include "tests/launch/bounded_run.h"
#include "tests/launch/checkpoint_test_util.h"
#include "tests/launch/child_process.h"

namespace openmoe {
namespace {

using testing::GuardVerdict;

constexpr testing::GuardLimits kLimits = {
    .cpu_seconds = 2, .stall_seconds = 5, .wall_seconds = 120};

TEST(HangGuard, BinaryBlockedOnAFifoIsStoppedAsAHang) {
  testing::ScratchDir dir;
  const std::string fifo = dir.Sub("job.fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  testing::RunLimits limits;
  limits.guard = kLimits;
  const testing::RunResult r = testing::RunBounded({"plan", "--job", fifo}, limits);
  ASSERT_TRUE(r.timed_out) << r.Describe();
  EXPECT_EQ(r.stopped, GuardVerdict::kHang) << r.Describe();
  EXPECT_EQ(r.signal, SIGKILL) << r.Describe();
  EXPECT_GE(r.seconds, kLimits.stall_seconds) << r.Describe();
  EXPECT_LT(r.seconds, kLimits.wall_seconds) << r.Describe();
  EXPECT_LT(r.cpu_seconds, kLimits.cpu_seconds) << r.Describe();
}

// The same under mpirun through child_process.h, as the signal tests wait: the tree of mpirun and
// its two blocked ranks is a hang; WaitFor gives up, Finish says -2, nothing is left running.
TEST(HangGuard, MpiRanksBlockedOnAFifoAreStoppedAsAHang) {
  testing::ScratchDir dir;
  const std::string fifo = dir.Sub("job.fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // `plan`: both ranks block on the FIFO. (Under `train` rank 1 would wait for rank 0 in a
  // collective, and Open MPI's wait spins: CPU exhaustion, which the CPU budget catches.)
  testing::Child child = testing::StartMpi(2, {"plan", "--job", fifo}, kLimits);
  EXPECT_FALSE(child.WaitFor("openmoe plan")) << child.seen;
  EXPECT_EQ(child.stopped, GuardVerdict::kHang) << child.seen;
  EXPECT_EQ(child.Finish(), -2) << child.seen;
  EXPECT_LT(child.guard.wall_seconds(), kLimits.wall_seconds);
  // Killed ranks are reaped by init: give it a moment (a backstop, not a timing).
  std::set<pid_t> left = {child.pid};
  for (int i = 0; i < 100 && !left.empty(); ++i) {
    left.clear();
    testing::TreeCpuSeconds(child.pid, child.pid, &left);
    if (!left.empty()) usleep(100000);
  }
  EXPECT_TRUE(left.empty()) << left.size() << " processes of the tree still run";
}

TEST(HangGuard, BusyLoopIsStoppedAsCpuExhaustion) {
  testing::RunLimits limits;
  limits.guard = kLimits;
  const testing::RunResult r =
      testing::RunProgramBounded("/bin/sh", {"-c", "while :; do :; done"}, limits);
  ASSERT_TRUE(r.timed_out) << r.Describe();
  EXPECT_EQ(r.stopped, GuardVerdict::kCpuBudget) << r.Describe();
  EXPECT_GE(r.cpu_seconds, kLimits.cpu_seconds) << r.Describe();
  EXPECT_LT(r.seconds, kLimits.wall_seconds) << r.Describe();
}

// A tree: the CPU of a grandchild counts, so a parent that only waits for a busy child is
// neither a hang nor free.
TEST(HangGuard, CpuOfDescendantsCounts) {
  testing::RunLimits limits;
  limits.guard = kLimits;
  const testing::RunResult r =
      testing::RunProgramBounded("/bin/sh", {"-c", "sh -c 'while :; do :; done'; true"}, limits);
  ASSERT_TRUE(r.timed_out) << r.Describe();
  EXPECT_EQ(r.stopped, GuardVerdict::kCpuBudget) << r.Describe();
}

}  // namespace
}  // namespace openmoe
