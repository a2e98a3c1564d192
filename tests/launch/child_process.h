// Runs the `openmoe` binary (or mpirun) as a child process that a test talks to while it runs
// (waits for output, sends signals): its stdout and stderr merged into one pipe that the test
// reads, or stdout left unread to stall it. For runs to completion with limits, bounded_run.h.
// OPENMOE_BINARY, OPENMOE_SOURCE_DIR and OPENMOE_MPIEXEC come from tests/CMakeLists.txt.
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

namespace openmoe::testing {

struct Child {
  pid_t pid = -1;
  int out = -1;  // stdout and stderr merged (or stderr alone, when stdout is stalled)
  int stalled_stdout = -1;  // the unread read end of a stalled stdout, else -1
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
  // Waits at most `seconds` for the child to exit; its exit status, -1 for a signal, -2 when it
  // is still running (it is then killed).
  int Finish(double seconds = 300) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    int status = 0;
    pid_t done = 0;
    fcntl(out, F_SETFL, fcntl(out, F_GETFL) | O_NONBLOCK);
    while ((done = waitpid(pid, &status, WNOHANG)) == 0) {
      Drain();
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        Close();
        return -2;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    Drain();
    Close();
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

// Starts `program` with `args` and OPENBLAS_NUM_THREADS=1. stall_stdout: stdout goes to a pipe of
// the smallest capacity that nobody reads, so the child's writes to it block once it is full.
inline Child StartProgram(const std::string& program, const std::vector<std::string>& args,
                          bool stall_stdout = false) {
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
  close(pipe_fds[1]);
  if (stall_stdout) close(stall_fds[1]);
  c.out = pipe_fds[0];
  c.stalled_stdout = stall_fds[0];
  return c;
}

// `openmoe <args>`.
inline Child Start(const std::vector<std::string>& args, bool stall_stdout = false) {
  return StartProgram(OPENMOE_BINARY, args, stall_stdout);
}

// `mpirun -np <ranks> openmoe <args>` (as root where needed; ranks share the cores).
inline Child StartMpi(int ranks, const std::vector<std::string>& args) {
  std::vector<std::string> all = {"--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                                  "-np", std::to_string(ranks), OPENMOE_BINARY};
  all.insert(all.end(), args.begin(), args.end());
  return StartProgram(OPENMOE_MPIEXEC, all);
}

}  // namespace openmoe::testing
