// Preemption end to end: a stop signal during `openmoe train` (SIGUSR1 to mpirun, which forwards it
// to every rank at once; SIGTERM to a single process) finishes the step, saves, exits 0, and the
// resumed run ends bit for bit where an uninterrupted run of the same length ends. A stalled stdout
// does not stop training.
#include <signal.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "launch/checkpoint/manifest.h"
#include "launch/checkpoint/reader.h"
#include "tests/launch/checkpoint_test_util.h"
#include "tests/launch/child_process.h"

namespace openmoe {
namespace {

using testing::Child;
using testing::ScratchDir;

std::vector<std::string> TrainArgs(const std::string& run_dir, int steps) {
  return {"train", "--job", std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt",
          "--set", "train.steps=" + std::to_string(steps), "--set", "train.threads=1",
          "--set", "logging.print_every=1", "--set", "checkpoint.dir=" + run_dir + "/ckpt",
          "--set", "logging.metrics_path=" + run_dir + "/metrics.jsonl"};
}

Child Run(int ranks, const std::vector<std::string>& args) {
  return ranks == 1 ? testing::Start(args) : testing::StartMpi(ranks, args);
}

// Every tensor's checksum in the newest checkpoint under `ckpt`, by file name.
std::map<std::string, uint64_t> NewestChecksums(const std::string& ckpt, int64_t* step) {
  std::map<std::string, uint64_t> out;
  auto list = ListCheckpoints(ckpt);
  EXPECT_TRUE(list.ok() && !list->empty()) << ckpt;
  if (!list.ok() || list->empty()) return out;
  auto reader = CheckpointReader::Open(list->front().path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return out;
  EXPECT_TRUE(reader->VerifyAllFiles().ok());
  *step = reader->manifest().step();
  for (const TensorEntry& t : reader->manifest().tensors()) out[t.file()] = t.checksum();
  return out;
}

// The "step" records of a metrics file: step -> the record's loss text.
std::map<int64_t, std::string> StepLosses(const std::string& metrics, int* duplicates) {
  std::map<int64_t, std::string> out;
  *duplicates = 0;
  for (absl::string_view line : absl::StrSplit(testing::ReadBytes(metrics), '\n', absl::SkipEmpty())) {
    if (line.find("\"record\":\"step\"") == absl::string_view::npos) continue;
    const size_t s = line.find("\"step\":") + 7;
    const int64_t step = std::stoll(std::string(line.substr(s, line.find(',', s) - s)));
    const size_t l = line.find("\"loss\":") + 7;
    if (out.count(step)) ++*duplicates;
    out[step] = std::string(line.substr(l, line.find(',', l) - l));
  }
  return out;
}

void ExpectPreemptedRunMatchesUninterrupted(int ranks, int sig, const std::string& name) {
  ScratchDir dir;
  const std::string stopped = dir.Sub("stopped"), straight = dir.Sub("straight");
  Child child = Run(ranks, TrainArgs(stopped, 100000));
  ASSERT_TRUE(child.WaitFor("step 3/")) << child.seen;
  kill(child.pid, sig);
  ASSERT_EQ(child.Finish(), 0) << child.seen;
  EXPECT_NE(child.seen.find("stop requested by " + name), std::string::npos) << child.seen;
  EXPECT_NE(child.seen.find("run summary (stopped by " + name + ")"), std::string::npos)
      << child.seen;
  int64_t stop_step = 0;
  const auto at_stop = NewestChecksums(stopped + "/ckpt", &stop_step);
  ASSERT_GE(stop_step, 3);

  // Resume to three steps past the stop; run the same length without a stop.
  const int end = static_cast<int>(stop_step) + 3;
  Child resumed = Run(ranks, TrainArgs(stopped, end));
  ASSERT_EQ(resumed.Finish(), 0) << resumed.seen;
  EXPECT_NE(resumed.seen.find("resumed from"), std::string::npos) << resumed.seen;
  Child uninterrupted = Run(ranks, TrainArgs(straight, end));
  ASSERT_EQ(uninterrupted.Finish(), 0) << uninterrupted.seen;

  int64_t a = 0, b = 0;
  const auto resumed_sums = NewestChecksums(stopped + "/ckpt", &a);
  const auto straight_sums = NewestChecksums(straight + "/ckpt", &b);
  EXPECT_EQ(a, end);
  EXPECT_EQ(b, end);
  EXPECT_FALSE(resumed_sums.empty());
  EXPECT_EQ(resumed_sums, straight_sums) << "parameters and optimizer state differ bitwise";

  int dup_resumed = 0, dup_straight = 0;
  const auto losses = StepLosses(stopped + "/metrics.jsonl", &dup_resumed);
  const auto reference = StepLosses(straight + "/metrics.jsonl", &dup_straight);
  EXPECT_EQ(dup_resumed, 0) << "a resumed run's metrics repeat steps";
  EXPECT_EQ(static_cast<int>(losses.size()), end);
  EXPECT_EQ(losses, reference);
}

TEST(Preemption, SigusrToMpirunSavesExitsZeroAndResumesBitForBit) {
  ExpectPreemptedRunMatchesUninterrupted(2, SIGUSR1, "SIGUSR1");
}

TEST(Preemption, SigtermToOneProcessSavesExitsZeroAndResumesBitForBit) {
  ExpectPreemptedRunMatchesUninterrupted(1, SIGTERM, "SIGTERM");
}

TEST(Preemption, StalledStdoutDoesNotStopTraining) {
  ScratchDir dir;
  std::vector<std::string> args = TrainArgs(dir.path(), 100000);
  args.insert(args.end(), {"--set", "checkpoint.every_steps=1"});
  // stdout is a full pipe nobody reads: every progress line would block a plain printf.
  Child child = testing::Start(args, /*stall_stdout=*/true);
  int64_t step = 0;
  while (step < 8 && child.Guarded()) {
    usleep(100000);
    auto list = ListCheckpoints(dir.Sub("ckpt"));
    if (list.ok() && !list->empty()) step = list->front().step;
  }
  EXPECT_GE(step, 8) << "training stalled with stdout";
  kill(child.pid, SIGUSR2);
  EXPECT_EQ(child.Finish(), 0) << child.seen;
  auto list = ListCheckpoints(dir.Sub("ckpt"));
  ASSERT_TRUE(list.ok() && !list->empty());
  EXPECT_GT(list->front().step, step);
}

}  // namespace
}  // namespace openmoe
