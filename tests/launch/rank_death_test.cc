// A rank killed with SIGKILL while the others are in the middle of steps (gradient buckets and
// chunked expert exchanges in flight on the progress thread) ends the whole job: mpirun exits
// non-zero on its own, and no rank is left blocked in a collective. Bounded by a HangGuard (a
// job that stops making CPU progress, or spins, fails the test), not by wall time.
#include <dirent.h>
#include <signal.h>

#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/launch/checkpoint_test_util.h"
#include "tests/launch/child_process.h"

namespace openmoe {
namespace {

// The pids of `parent`'s descendants named `name` (/proc/<pid>/stat: "pid (comm) state ppid ...").
std::vector<pid_t> DescendantsNamed(pid_t parent, const std::string& name) {
  std::vector<std::pair<pid_t, pid_t>> procs;  // (pid, ppid)
  std::vector<std::string> names;
  std::vector<pid_t> out;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return out;
  while (dirent* e = readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::string(e->d_name) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    const size_t open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    const std::string comm = line.substr(open + 1, close - open - 1);
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) != 2) continue;
    procs.push_back({pid, ppid});
    names.push_back(comm);
  }
  closedir(proc);
  std::vector<pid_t> tree = {parent};
  for (size_t t = 0; t < tree.size(); ++t) {
    for (size_t i = 0; i < procs.size(); ++i) {
      if (procs[i].second != tree[t]) continue;
      tree.push_back(procs[i].first);
      if (names[i] == name) out.push_back(procs[i].first);
    }
  }
  return out;
}

TEST(RankDeath, KillNineOfARankDuringOverlappedStepsEndsTheJob) {
  testing::ScratchDir dir;
  const std::vector<std::string> args = {
      "train", "--job", std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt",
      "--set", "train.steps=100000", "--set", "train.threads=1", "--set", "logging.print_every=1",
      // Many small buckets and a chunked exchange: something is always in flight.
      "--set", "train.grad_bucket_mb=0.01", "--set", "train.expert_exchange_chunks=2",
      "--set", "logging.metrics_path=" + dir.path() + "/metrics.jsonl"};
  testing::Child job = testing::StartMpi(2, args, {.cpu_seconds = 300, .stall_seconds = 30});
  ASSERT_TRUE(job.WaitFor("step 5/")) << job.seen;
  const std::vector<pid_t> ranks = DescendantsNamed(job.pid, "openmoe");
  ASSERT_EQ(ranks.size(), 2u) << "mpirun's rank processes";
  ASSERT_EQ(kill(ranks[1], SIGKILL), 0);
  const int status = job.Finish();
  EXPECT_NE(status, -2) << "the job did not end after a rank died ("
                        << testing::VerdictName(job.stopped)
                        << ")\n" << job.seen;
  EXPECT_NE(status, 0) << job.seen;  // mpirun waited for its ranks and reports the death
}

}  // namespace
}  // namespace openmoe
