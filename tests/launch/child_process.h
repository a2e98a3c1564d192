// Runs the `openmoe` binary (or mpirun) as a child process that a test talks to while it runs
// (waits for output, sends signals): its stdout and stderr merged into one pipe that the test
// reads, or stdout left unread to stall it. Waits are bounded by a HangGuard on the child's tree
// (tests/testing/hang_guard.h: CPU budget, no CPU progress = hang, generous wall backstop), not by
// wall time, so a busy machine slows them without failing them. For runs to completion with
// limits, bounded_run.h. OPENMOE_BINARY, OPENMOE_SOURCE_DIR and OPENMOE_MPIEXEC come from
// tests/CMakeLists.txt.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/hang_guard.h"

namespace openmoe::testing {

struct Child {
  pid_t pid = -1;
  int out = -1;  // stdout and stderr merged (or stderr alone, when stdout is stalled)
  int stalled_stdout = -1;  // the unread read end of a stalled stdout, else -1
  std::string seen;
  HangGuard guard;
  GuardVerdict stopped = GuardVerdict::kRunning;  // why the guard stopped the child, if it did

  // Reads output until `text` appears (true) or the child ends (false). When the guard trips the
  // child is killed (false; `stopped` says why).
  bool WaitFor(const std::string& text) {
    while (seen.find(text) == std::string::npos) {
      if (!Guarded()) return false;
      pollfd p{out, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(out, buf, sizeof buf);
      if (n <= 0) return seen.find(text) != std::string::npos;
      seen.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  // False, with the child killed, when the guard trips; else true. Call it while waiting.
  bool Guarded() {
    if (stopped == GuardVerdict::kRunning) stopped = guard.Check();
    if (stopped == GuardVerdict::kRunning) return true;
    guard.Kill();
    seen += std::string("\n[test: child stopped: ") + VerdictName(stopped) + "]\n";
    return false;
  }
  // Waits for the child to exit; its exit status, -1 for a signal, -2 when the guard stopped it.
  int Finish() {
    int status = 0;
    pid_t done = 0;
    fcntl(out, F_SETFL, fcntl(out, F_GETFL) | O_NONBLOCK);
    while ((done = waitpid(pid, &status, WNOHANG)) == 0) {
      Drain();
      if (!Guarded()) {
        waitpid(pid, &status, 0);
        Close();
        return -2;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    Drain();
    Close();
    if (stopped != GuardVerdict::kRunning) return -2;  // killed by the guard in WaitFor
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  void Drain() {
    char buf[4096];
    ssize_t n;
    while ((n = read(out, buf, sizeof buf)) > 0) seen.append(buf, static_cast<size_t>(n));
  }
  void Close() {
    close(out);
    if (stalled_stdout >= 0) close(stalled_stdout);
  }
};

// Starts `program` with `args` and OPENBLAS_NUM_THREADS=1, stdin /dev/null, leading its own
// process group. stall_stdout: stdout goes to a pipe of the smallest capacity that nobody reads,
// so the child's writes to it block once it is full.
inline Child StartProgram(const std::string& program, const std::vector<std::string>& args,
                          bool stall_stdout = false, const GuardLimits& limits = {}) {
  int pipe_fds[2];
  int stall_fds[2] = {-1, -1};
  EXPECT_EQ(pipe(pipe_fds), 0);
  if (stall_stdout) {
    EXPECT_EQ(pipe(stall_fds), 0);
    fcntl(stall_fds[1], F_SETPIPE_SZ, 4096);
  }
  Child c;
  c.pid = fork();
  if (c.pid == 0) {
    setpgid(0, 0);
    const int null_fd = open("/dev/null", O_RDONLY);
    dup2(null_fd, 0);
    dup2(stall_stdout ? stall_fds[1] : pipe_fds[1], 1);
    dup2(pipe_fds[1], 2);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    if (stall_stdout) {
      close(stall_fds[0]);
      close(stall_fds[1]);
    }
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    std::vector<char*> argv;
    std::string binary = program;
    argv.push_back(binary.data());
    std::vector<std::string> copy = args;
    for (std::string& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  setpgid(c.pid, c.pid);  // as the child does: whichever runs first, the group exists
  c.guard = HangGuard(c.pid, limits);
  close(pipe_fds[1]);
  if (stall_stdout) close(stall_fds[1]);
  c.out = pipe_fds[0];
  c.stalled_stdout = stall_fds[0];
  return c;
}

// `openmoe <args>`.
inline Child Start(const std::vector<std::string>& args, bool stall_stdout = false,
                   const GuardLimits& limits = {}) {
  return StartProgram(OPENMOE_BINARY, args, stall_stdout, limits);
}

// `mpirun -np <ranks> openmoe <args>` (as root where needed; ranks share the cores).
inline Child StartMpi(int ranks, const std::vector<std::string>& args,
                      const GuardLimits& limits = {}) {
  std::vector<std::string> all = {"--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                                  "-np", std::to_string(ranks), OPENMOE_BINARY};
  all.insert(all.end(), args.begin(), args.end());
  return StartProgram(OPENMOE_MPIEXEC, all, /*stall_stdout=*/false, limits);
}

}  // namespace openmoe::testing
