// Runs the `openmoe` binary (OPENMOE_BINARY), or another program, to completion as a child process
// for the bad-spec and fuzz tests: stdout and stderr captured apart, the child's tree watched by a
// HangGuard (tests/testing/hang_guard.h: a CPU-time budget, a hang as no CPU progress, a generous
// wall-clock backstop; SIGKILL to the tree when one trips) and an optional RLIMIT_AS. The child
// runs with OPENBLAS_NUM_THREADS=1 in `cwd` (when given), leading its own process group.
// RunBoundedAll runs many, a few at a time.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "tests/testing/hang_guard.h"

namespace openmoe::testing {

struct RunLimits {
  GuardLimits guard;                // CPU budget, hang, wall backstop
  int64_t address_space_bytes = 0;  // RLIMIT_AS; 0: none
  std::string cwd;
};

struct RunResult {
  bool exited = false;  // exited normally (then exit_code is valid)
  int exit_code = -1;
  int signal = 0;          // the terminating signal, when killed by one
  bool timed_out = false;  // stopped by the guard (then `stopped` says why)
  GuardVerdict stopped = GuardVerdict::kRunning;
  std::string out, err;
  double seconds = 0;      // wall
  double cpu_seconds = 0;  // of the whole tree, as the guard last saw it

  // The non-empty lines of stderr.
  std::vector<std::string> ErrLines() const {
    return absl::StrSplit(err, '\n', absl::SkipEmpty());
  }
  std::string Describe() const {
    return "exited=" + std::to_string(exited) + " rc=" + std::to_string(exit_code) +
           " signal=" + std::to_string(signal) + " timed_out=" + std::to_string(timed_out) +
           (timed_out ? std::string(" (") + VerdictName(stopped) + ")" : "") +
           " wall=" + std::to_string(seconds) + "s cpu=" + std::to_string(cpu_seconds) + "s" +
           "\n--- stderr ---\n" + err + "--- stdout (tail) ---\n" +
           (out.size() > 2000 ? out.substr(out.size() - 2000) : out);
  }
};

inline RunResult RunProgramBounded(const std::string& program, const std::vector<std::string>& args,
                                   const RunLimits& limits = {}) {
  RunResult result;
  // Everything the child needs is built before fork: between fork and exec it only calls
  // async-signal-safe functions, and the pipes are close-on-exec (a run started by another thread
  // does not hold this one's open), so runs may start from several threads at once.
  std::vector<std::string> copy = args;
  std::string binary = program;
  std::vector<char*> argv = {binary.data()};
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings = {"OPENBLAS_NUM_THREADS=1"};
  for (char** e = ::environ; *e != nullptr; ++e)
    if (std::string(*e).rfind("OPENBLAS_NUM_THREADS=", 0) != 0) env_strings.emplace_back(*e);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const rlimit as{static_cast<rlim_t>(limits.address_space_bytes),
                  static_cast<rlim_t>(limits.address_space_bytes)};
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return result;
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return result;
  }
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    const int null_fd = open("/dev/null", O_RDONLY);
    dup2(null_fd, 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    close(out_pipe[0]);
    close(out_pipe[1]);
    close(err_pipe[0]);
    close(err_pipe[1]);
    if (!limits.cwd.empty() && chdir(limits.cwd.c_str()) != 0) _exit(126);
    if (limits.address_space_bytes > 0) setrlimit(RLIMIT_AS, &as);
    execve(binary.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (pid < 0) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    return result;
  }
  setpgid(pid, pid);  // as the child does: whichever runs first, the group exists before exec
  HangGuard guard(pid, limits.guard);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  int status = 0;
  rusage usage{};  // of the child and the descendants it reaped
  for (;;) {
    if (open_fds == 0) {
      // Output closed: wait for the exit, still guarded (a child may close its pipes and block).
      if (wait4(pid, &status, WNOHANG, &usage) == pid) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } else if (poll(fds, 2, 100) > 0) {
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
    if (const GuardVerdict v = guard.Check(); v != GuardVerdict::kRunning) {
      result.timed_out = true;
      result.stopped = v;
      guard.Kill();
      wait4(pid, &status, 0, &usage);
      break;
    }
  }
  for (const pollfd& p : fds)
    if (p.fd >= 0) close(p.fd);
  auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * t.tv_usec; };
  result.cpu_seconds = std::max(guard.cpu_seconds(), secs(usage.ru_utime) + secs(usage.ru_stime));
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.exited = WIFEXITED(status);
  if (result.exited) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

// `openmoe <args>`.
inline RunResult RunBounded(const std::vector<std::string>& args, const RunLimits& limits = {}) {
  return RunProgramBounded(OPENMOE_BINARY, args, limits);
}

// Runs every argument list (each as RunBounded with `limits`), `parallel` at a time; results in
// the order of `runs`. The runs are short (a process start, a job load, at most a step of a tiny
// model); a few at a time overlap their waits on the disk, and since the guard counts CPU time,
// not wall time, sharing the cores cannot make a run fail.
inline std::vector<RunResult> RunBoundedAll(const std::vector<std::vector<std::string>>& runs,
                                            const RunLimits& limits, int parallel = 4) {
  std::vector<RunResult> results(runs.size());
  std::atomic<size_t> next{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < std::max(1, parallel); ++w) {
    workers.emplace_back([&] {
      for (size_t i = next++; i < runs.size(); i = next++) results[i] = RunBounded(runs[i], limits);
    });
  }
  for (std::thread& t : workers) t.join();
  return results;
}

}  // namespace openmoe::testing
