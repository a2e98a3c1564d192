// guarded_run: runs a command under a HangGuard (hang_guard.h), for the CTest entries that run a
// whole program (the mpirun suites, the test-host script), so their limits are CPU time and CPU
// progress rather than CTest's wall-clock TIMEOUT, which stays only as a far backstop.
//
//   guarded_run CPU_SECONDS STALL_SECONDS WALL_SECONDS -- COMMAND [ARGS...]
//
// Exits with the command's status (128 + n for signal n); when the guard stops the command it
// kills the whole tree, prints one line saying why, and exits 124 (as timeout(1) does).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "tests/testing/hang_guard.h"

int main(int argc, char** argv) {
  if (argc < 6 || std::strcmp(argv[4], "--") != 0) {
    std::fprintf(
        stderr, "usage: guarded_run CPU_SECONDS STALL_SECONDS WALL_SECONDS -- COMMAND [ARGS...]\n");
    return 2;
  }
  const openmoe::testing::GuardLimits limits = {.cpu_seconds = std::atof(argv[1]),
                                                .stall_seconds = std::atof(argv[2]),
                                                .wall_seconds = std::atof(argv[3])};
  const pid_t pid = fork();
  if (pid < 0) return 2;
  if (pid == 0) {
    setpgid(0, 0);
    // Out of the foreground group, a read of a terminal would stop it (mpirun forwards stdin).
    const int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, 0);
    execvp(argv[5], argv + 5);
    std::fprintf(stderr, "guarded_run: cannot run %s: %s\n", argv[5], std::strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  openmoe::testing::HangGuard guard(pid, limits);
  int status = 0;
  rusage usage{};
  while (wait4(pid, &status, WNOHANG, &usage) != pid) {
    if (const auto v = guard.Check(); v != openmoe::testing::GuardVerdict::kRunning) {
      guard.Kill();
      waitpid(pid, &status, 0);
      std::fprintf(stderr, "guarded_run: %s stopped: %s after %.1f s CPU, %.1f s wall\n", argv[5],
                   openmoe::testing::VerdictName(v), guard.cpu_seconds(), guard.wall_seconds());
      return 124;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const double cpu = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
                     1e-6 * (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
  std::fprintf(stderr, "guarded_run: %s used %.1f s CPU, %.1f s wall\n", argv[5],
               std::max(cpu, guard.cpu_seconds()), guard.wall_seconds());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
