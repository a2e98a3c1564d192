// Runs the `openmoe` binary (or mpirun) as a child process for end-to-end tests: its stdout and
// stderr merged into one pipe that the test reads, or stdout left unread to stall it.
// OPENMOE_BINARY, OPENMOE_SOURCE_DIR and OPENMOE_MPIEXEC come from tests/CMakeLists.txt.
#pragma once

#include <fcntl.h>
#include <sys/resource.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
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

// Limits for RunOpenmoe's child: wall clock (then SIGKILL), CPU seconds and address space
// (setrlimit; 0: none), and the working directory (empty: the test's).
struct ChildLimits {
  double timeout_seconds = 120;
  int64_t cpu_seconds = 0;
  int64_t address_space_bytes = 0;
  std::string cwd;
};

// How a child run ended, with its stdout and stderr apart.
struct ChildResult {
  bool exited = false;  // by exit(), with exit_code
  int exit_code = -1;
  int signal = 0;       // the signal that ended it, or 0
  bool timed_out = false;
  std::string out, err;
  // stderr's non-empty lines.
  std::vector<std::string> ErrLines() const {
    std::vector<std::string> lines;
    size_t begin = 0;
    while (begin < err.size()) {
      size_t end = err.find('\n', begin);
      if (end == std::string::npos) end = err.size();
      if (end > begin) lines.push_back(err.substr(begin, end - begin));
      begin = end + 1;
    }
    return lines;
  }
  std::string Describe() const {
    return "exited=" + std::to_string(exited) + " code=" + std::to_string(exit_code) +
           " signal=" + std::to_string(signal) + " timed_out=" + std::to_string(timed_out) +
           "\nstdout:\n" + out + "\nstderr:\n" + err;
  }
};

// Runs `openmoe <args>` to its end (or the timeout) with OPENBLAS_NUM_THREADS=1.
inline ChildResult RunOpenmoe(const std::vector<std::string>& args, const ChildLimits& limits = {}) {
  int out_fds[2], err_fds[2];
  EXPECT_EQ(pipe(out_fds), 0);
  EXPECT_EQ(pipe(err_fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out_fds[1], 1);
    dup2(err_fds[1], 2);
    for (int fd : {out_fds[0], out_fds[1], err_fds[0], err_fds[1]}) close(fd);
    if (!limits.cwd.empty() && chdir(limits.cwd.c_str()) != 0) _exit(126);
    if (limits.cpu_seconds > 0) {
      const rlimit r{static_cast<rlim_t>(limits.cpu_seconds), static_cast<rlim_t>(limits.cpu_seconds)};
      setrlimit(RLIMIT_CPU, &r);
    }
    if (limits.address_space_bytes > 0) {
      const rlimit r{static_cast<rlim_t>(limits.address_space_bytes),
                     static_cast<rlim_t>(limits.address_space_bytes)};
      setrlimit(RLIMIT_AS, &r);
    }
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    std::string binary = OPENMOE_BINARY;
    std::vector<std::string> copy = args;
    std::vector<char*> argv = {binary.data()};
    for (std::string& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(out_fds[1]);
  close(err_fds[1]);
  ChildResult result;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(limits.timeout_seconds);
  pollfd fds[2] = {{out_fds[0], POLLIN, 0}, {err_fds[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  while (open_fds > 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      result.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    if (poll(fds, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (const pollfd& p : fds)
    if (p.fd >= 0) close(p.fd);
  int status = 0;
  waitpid(pid, &status, 0);
  result.exited = WIFEXITED(status);
  result.exit_code = result.exited ? WEXITSTATUS(status) : -1;
  result.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  return result;
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
