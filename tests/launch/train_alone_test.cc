// `openmoe train` started alone (not by mpirun) runs on one rank without MPI. Open MPI's singleton
// start-up forks a daemon (orted) from the library's install prefix and waits for its handshake,
// which on a busy machine waited seconds without using CPU; the hang guard of the timed tests
// took such runs for hangs. Independent route: with OPAL_PREFIX pointing at nothing, Open MPI
// cannot start that daemon and MPI_Init_thread aborts the process (checked by hand on the binary
// that still started MPI alone: "An error occurred in MPI_Init_thread"), so a run that trains
// and exits 0 there did not start MPI.
#include <sys/stat.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/launch/bounded_run.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

// `openmoe train` of tiny for `steps` steps into `dir`'s `ckpt` with the variables `env` set
// (NAME=value), started by /usr/bin/env as a launcher-less process.
testing::RunResult TrainTiny(const testing::ScratchDir& dir, std::vector<std::string> env,
                             int steps, const std::string& ckpt) {
  testing::RunLimits limits;
  limits.cwd = dir.path();
  env.insert(env.end(), {OPENMOE_BINARY, "train", "--job",
                         std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt",
                         "--resume", "never", "--set", absl::StrCat("train.steps=", steps),
                         "--set", "checkpoint.dir=" + dir.Sub(ckpt)});
  return testing::RunProgramBounded("/usr/bin/env", env, limits);
}

bool Exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

TEST(TrainAlone, TrainsWithoutStartingMpi) {
  testing::ScratchDir dir;
  const testing::RunResult r =
      TrainTiny(dir, {"OPAL_PREFIX=" + dir.Sub("no-open-mpi-here")}, 2, "ckpt");
  ASSERT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_FALSE(absl::StrContains(r.err, "MPI_Init")) << r.Describe();
  // It trained: both steps ran and the second one's checkpoint is on disk.
  EXPECT_TRUE(absl::StrContains(r.out, "steps 1..2 (2 run, 0 skipped)")) << r.Describe();
  EXPECT_TRUE(Exists(dir.Sub("ckpt/step_00000002"))) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.out, "| 1 rank |")) << r.Describe();
}

// `srun -n 2` without an MPI plugin: each task sees SLURM_STEP_NUM_TASKS=2 and no launcher
// variables. Training alone would write the same checkpoint twice over; the run refuses in one
// line, exits non-zero and writes nothing. One task (srun -n 1) trains as before.
TEST(TrainAlone, RefusesTheTasksOfAnSrunWithoutMpi) {
  testing::ScratchDir dir;
  const testing::RunResult r =
      TrainTiny(dir, {"SLURM_STEP_NUM_TASKS=2", "SLURM_PROCID=1"}, 2, "ckpt");
  ASSERT_TRUE(r.exited) << r.Describe();
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "srun started 2 tasks")) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "--mpi=pmix")) << r.Describe();
  EXPECT_FALSE(Exists(dir.Sub("ckpt"))) << r.Describe();
  const testing::RunResult one = TrainTiny(dir, {"SLURM_STEP_NUM_TASKS=1"}, 1, "ckpt1");
  ASSERT_TRUE(one.exited) << one.Describe();
  EXPECT_EQ(one.exit_code, 0) << one.Describe();
}

}  // namespace
}  // namespace openmoe
