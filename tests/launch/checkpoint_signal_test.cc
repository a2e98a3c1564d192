// The `openmoe` binary end to end: SIGTERM / SIGINT during `openmoe train` finish the step, leave
// a valid checkpoint and exit 0, and the run resumes from it; a bad --resume fails with one line.
// OPENMOE_BINARY is the path of the built binary (tests/CMakeLists.txt).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "launch/checkpoint_manifest.h"
#include "launch/checkpoint_reader.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

using testing::ScratchDir;

struct Child {
  pid_t pid = -1;
  int out = -1;  // stdout and stderr, merged
  std::string seen;

  // Reads output until `text` appears (true) or the child ends / `seconds` pass (false).
  bool WaitFor(const std::string& text, double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (seen.find(text) == std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      pollfd p{out, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(out, buf, sizeof buf);
      if (n <= 0) return seen.find(text) != std::string::npos;
      seen.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  // Reads the rest of the output and returns the exit status (-1: did not exit normally).
  int Finish() {
    char buf[4096];
    ssize_t n;
    while ((n = read(out, buf, sizeof buf)) > 0) seen.append(buf, static_cast<size_t>(n));
    close(out);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
};

Child Start(const std::vector<std::string>& args) {
  int pipe_fds[2];
  EXPECT_EQ(pipe(pipe_fds), 0);
  Child c;
  c.pid = fork();
  if (c.pid == 0) {
    dup2(pipe_fds[1], 1);
    dup2(pipe_fds[1], 2);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    std::vector<char*> argv;
    std::string binary = OPENMOE_BINARY;
    argv.push_back(binary.data());
    std::vector<std::string> copy = args;
    for (std::string& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  c.out = pipe_fds[0];
  return c;
}

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
  ASSERT_TRUE(child.WaitFor("step 3/", 120)) << child.seen;
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
