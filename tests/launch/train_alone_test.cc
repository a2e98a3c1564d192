// `openmoe train` started alone (not by mpirun) runs on one rank without MPI. Open MPI's singleton
// start-up forks a daemon (orted) from the library's install prefix and waits for its handshake,
// which on a busy machine waited seconds without using CPU; the hang guard of the timed tests
// took such runs for hangs. Independent route: with OPAL_PREFIX pointing at nothing, Open MPI
// cannot start that daemon and MPI_Init_thread aborts the process (checked by hand on the binary
// that still started MPI alone: "An error occurred in MPI_Init_thread"), so a run that trains
// and exits 0 there did not start MPI.
#include <sys/stat.h>

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/launch/bounded_run.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

TEST(TrainAlone, TrainsWithoutStartingMpi) {
  testing::ScratchDir dir;
  testing::RunLimits limits;
  limits.cwd = dir.path();
  const testing::RunResult r = testing::RunProgramBounded(
      "/usr/bin/env",
      {"OPAL_PREFIX=" + dir.Sub("no-open-mpi-here"), OPENMOE_BINARY, "train", "--job",
       std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt", "--resume", "never", "--set",
       "train.steps=2", "--set", "checkpoint.dir=" + dir.Sub("ckpt")},
      limits);
  ASSERT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_FALSE(absl::StrContains(r.err, "MPI_Init")) << r.Describe();
  // It trained: both steps ran and the second one's checkpoint is on disk.
  EXPECT_TRUE(absl::StrContains(r.out, "steps 1..2 (2 run, 0 skipped)")) << r.Describe();
  struct stat st {};
  EXPECT_EQ(stat(dir.Sub("ckpt/step_00000002").c_str(), &st), 0) << r.Describe();
}

// `srun -n 2` without an MPI plugin: each task sees SLURM_STEP_NUM_TASKS=2 and no launcher
// variables. Training alone would write the same checkpoint twice over; the run refuses in one
// line, exits non-zero and writes nothing.
TEST(TrainAlone, RefusesTheTasksOfAnSrunWithoutMpi) {
  testing::ScratchDir dir;
  testing::RunLimits limits;
  limits.cwd = dir.path();
  const testing::RunResult r = testing::RunProgramBounded(
      "/usr/bin/env",
      {"SLURM_STEP_NUM_TASKS=2", "SLURM_PROCID=1", OPENMOE_BINARY, "train", "--job",
       std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt", "--resume", "never", "--set",
       "train.steps=2", "--set", "checkpoint.dir=" + dir.Sub("ckpt")},
      limits);
  ASSERT_TRUE(r.exited) << r.Describe();
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "srun started 2 tasks")) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "--mpi=pmix")) << r.Describe();
  struct stat st {};
  EXPECT_NE(stat(dir.Sub("ckpt").c_str(), &st), 0) << r.Describe();
  // One task alone (srun -n 1) trains as before.
  const testing::RunResult one = testing::RunProgramBounded(
      "/usr/bin/env",
      {"SLURM_STEP_NUM_TASKS=1", OPENMOE_BINARY, "train", "--job",
       std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt", "--resume", "never", "--set",
       "train.steps=1", "--set", "checkpoint.dir=" + dir.Sub("ckpt1")},
      limits);
  ASSERT_TRUE(one.exited) << one.Describe();
  EXPECT_EQ(one.exit_code, 0) << one.Describe();
  EXPECT_TRUE(absl::StrContains(one.out, "| 1 rank |")) << one.Describe();
}

}  // namespace
}  // namespace openmoe
