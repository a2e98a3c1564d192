// The `openmoe` binary end to end: SIGTERM / SIGINT during `openmoe train` finish the step, leave
// a valid checkpoint and exit 0, and the run resumes from it; a bad --resume fails with one line.
// OPENMOE_BINARY is the path of the built binary (tests/CMakeLists.txt).
#include <signal.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "launch/checkpoint/manifest.h"
#include "launch/checkpoint/reader.h"
#include "tests/launch/checkpoint_test_util.h"
#include "tests/launch/child_process.h"

namespace openmoe {
namespace {

using testing::Child;
using testing::ScratchDir;
using testing::Start;

std::vector<std::string> TrainArgs(const std::string& ckpt, int steps) {
  return {"train",
          "--job",
          std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt",
          "--set",
          "train.steps=" + std::to_string(steps),
          "--set",
          "train.threads=1",
          "--set",
          "logging.print_every=1",
          "--set",
          "checkpoint.dir=" + ckpt};
}

void ExpectStopsCleanlyOn(int sig, const char* name) {
  ScratchDir dir;
  const std::string ckpt = dir.Sub("ckpt");
  Child child = Start(TrainArgs(ckpt, 100000));
  ASSERT_TRUE(child.WaitFor("step 3/")) << child.seen;
  kill(child.pid, sig);
  const int code = child.Finish();
  EXPECT_EQ(code, 0) << child.seen;
  EXPECT_NE(child.seen.find(std::string("stop requested by ") + name), std::string::npos)
      << child.seen;

  auto list = ListCheckpoints(ckpt);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u) << child.seen;
  auto reader = CheckpointReader::Open(list->front().path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE(reader->VerifyAllFiles().ok());
  const int64_t step = reader->manifest().step();
  EXPECT_GE(step, 3);
  EXPECT_LT(step, 100000);

  // The run continues from there to a later end.
  Child resumed = Start(TrainArgs(ckpt, static_cast<int>(step) + 2));
  EXPECT_EQ(resumed.Finish(), 0) << resumed.seen;
  EXPECT_NE(
      resumed.seen.find("resumed from " + list->front().path + " at step " + std::to_string(step)),
      std::string::npos)
      << resumed.seen;
  EXPECT_NE(resumed.seen.find("step " + std::to_string(step + 2) + "/"), std::string::npos)
      << resumed.seen;
  EXPECT_EQ(ListCheckpoints(ckpt)->front().step, step + 2);
}

TEST(CheckpointSignal, SigtermSavesAndExitsZero) { ExpectStopsCleanlyOn(SIGTERM, "SIGTERM"); }

TEST(CheckpointSignal, SigintSavesAndExitsZero) { ExpectStopsCleanlyOn(SIGINT, "SIGINT"); }

TEST(CheckpointSignal, BadResumeDirectoryFailsWithOneLine) {
  ScratchDir dir;
  std::vector<std::string> args = TrainArgs(dir.Sub("ckpt"), 2);
  args.push_back("--resume");
  args.push_back(dir.Sub("no_such_checkpoint"));
  Child child = Start(args);
  EXPECT_EQ(child.Finish(), 1);
  EXPECT_NE(child.seen.find("openmoe: " + dir.Sub("no_such_checkpoint") +
                            ": no such checkpoint directory"),
            std::string::npos)
      << child.seen;
}

}  // namespace
}  // namespace openmoe
