// HangGuard: the limits of a test's child process, robust to a busy machine. It watches the CPU
// time of the child's whole tree (its process group and every descendant: mpirun's ranks too) and
// stops it for one of three reasons:
//   kCpuBudget    the tree used more CPU time than the budget (a runaway loop, a spinning wait);
//   kHang         the tree gained no CPU time for stall_seconds: blocked forever (a read nobody
//                 writes to, a deadlock on a lock). A process that only waits for its turn on a
//                 busy machine still gains CPU time, so load does not look like a hang;
//   kWallBackstop wall time passed wall_seconds: the last resort, set several times what the CPU
//                 budget would take on a busy machine, so only a defect reaches it.
// Budgets are CPU time, so two other busy processes slow a run without failing it. The child must
// lead its own process group (setpgid(0, 0) before exec), so one kill reaches all of it.
#pragma once

#include <dirent.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>

namespace openmoe::testing {

struct GuardLimits {
  double cpu_seconds = 120;   // CPU time of the whole tree
  double stall_seconds = 20;  // no CPU progress for this long: a hang
  double wall_seconds = 900;  // backstop
};

enum class GuardVerdict { kRunning, kCpuBudget, kHang, kWallBackstop };

inline const char* VerdictName(GuardVerdict v) {
  switch (v) {
    case GuardVerdict::kRunning:
      return "running";
    case GuardVerdict::kCpuBudget:
      return "CPU budget exhausted";
    case GuardVerdict::kHang:
      return "hang (no CPU progress)";
    default:
      return "wall-clock backstop";
  }
}

// The CPU seconds (user + system, of live processes and of the children they reaped) of every
// process in group `pgid` or descended from `root`, and their pids.
inline double TreeCpuSeconds(pid_t root, pid_t pgid, std::set<pid_t>* pids = nullptr) {
  struct Proc {
    pid_t ppid = 0, pgrp = 0;
    double cpu = 0;
  };
  std::map<pid_t, Proc> procs;
  if (DIR* d = opendir("/proc")) {
    while (const dirent* e = readdir(d)) {
      const pid_t pid = static_cast<pid_t>(std::atol(e->d_name));
      if (pid <= 0) continue;
      const std::string path = "/proc/" + std::string(e->d_name) + "/stat";
      FILE* f = std::fopen(path.c_str(), "r");
      if (f == nullptr) continue;
      char buf[1024];
      const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
      std::fclose(f);
      buf[n] = '\0';
      // Fields after the command (which may hold spaces) start past its last ')'.
      const char* p = std::strrchr(buf, ')');
      if (p == nullptr) continue;
      char state = 0;
      long ppid = 0, pgrp = 0;
      unsigned long utime = 0, stime = 0;
      long cutime = 0, cstime = 0;
      if (std::sscanf(p + 1, " %c %ld %ld %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld", &state,
                      &ppid, &pgrp, &utime, &stime, &cutime, &cstime) != 7)
        continue;
      procs[pid] = {static_cast<pid_t>(ppid), static_cast<pid_t>(pgrp),
                    static_cast<double>(utime + stime + cutime + cstime)};
    }
    closedir(d);
  }
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  double total = 0;
  for (const auto& [pid, proc] : procs) {
    bool in = proc.pgrp == pgid || pid == root;
    // Ancestors up to the root: a rank that mpirun put in a group of its own still counts.
    for (pid_t up = proc.ppid; !in && up > 1;) {
      if (up == root) in = true;
      auto it = procs.find(up);
      up = it == procs.end() ? 0 : it->second.ppid;
    }
    if (!in) continue;
    total += proc.cpu / tick;
    if (pids != nullptr) pids->insert(pid);
  }
  return total;
}

class HangGuard {
 public:
  HangGuard() = default;
  // Watches `pid`, the leader of its own process group, from now.
  HangGuard(pid_t pid, const GuardLimits& limits)
      : pid_(pid), limits_(limits), start_(Clock::now()), last_progress_(start_) {}

  // kRunning, or why the tree must stop (it is not stopped here: Kill does that). Call it as often
  // as convenient: /proc is scanned at most every 250 ms (a scan reads every process's stat).
  GuardVerdict Check() {
    const auto now = Clock::now();
    if (now - last_scan_ >= std::chrono::milliseconds(250)) {
      last_scan_ = now;
      // Progress is any change: a process that leaves the tree unreaped takes its time with it.
      const double cpu = TreeCpuSeconds(pid_, pid_);
      if (cpu != last_cpu_) {
        last_cpu_ = cpu;
        last_progress_ = now;
      }
      cpu_ = std::max(cpu_, cpu);
    }
    if (cpu_ > limits_.cpu_seconds) return GuardVerdict::kCpuBudget;
    if (Seconds(now - last_progress_) > limits_.stall_seconds) return GuardVerdict::kHang;
    if (Seconds(now - start_) > limits_.wall_seconds) return GuardVerdict::kWallBackstop;
    return GuardVerdict::kRunning;
  }
  // SIGKILL to the group and to every descendant.
  void Kill() const {
    std::set<pid_t> pids;
    TreeCpuSeconds(pid_, pid_, &pids);
    kill(-pid_, SIGKILL);
    for (pid_t p : pids) kill(p, SIGKILL);
  }
  double cpu_seconds() const { return cpu_; }
  double wall_seconds() const { return Seconds(Clock::now() - start_); }

 private:
  using Clock = std::chrono::steady_clock;
  static double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

  pid_t pid_ = -1;
  GuardLimits limits_;
  Clock::time_point start_, last_progress_, last_scan_;
  double cpu_ = 0, last_cpu_ = 0;
};

}  // namespace openmoe::testing
