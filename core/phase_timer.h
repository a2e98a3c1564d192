// Measured time of the phases of one training step: named phases, seconds accumulated per phase,
// entered with a scoped RAII timer at the call site.
//
// Exclusive time: entering a phase charges the time since the last transition to the phase that
// was running (the enclosing one, or kOther outside every scope) and leaving it charges its own
// share, so nested scopes never count twice (the EP runner's dispatch inside the decoder's
// experts scope takes its time out of experts) and, between Start and Stop, the phases add up
// exactly to the elapsed time. kOther is whatever ran in no scope (embedding lookup, residual
// adds, the loss-scale and metric reductions).
//
// The exchange details (kMpiCounts, kMpiRows) are inclusive and outside that sum: time spent in the
// counts all-to-all and in the row all-to-all-v's of the expert exchange, already part of the
// dispatch / combine phases they run in.
//
// CPU time (opt-in, set_measure_cpu): each transition also reads the process's CPU clock (every
// thread: GEMM, ParallelFor and attention workers), so cpu_seconds(p) / seconds(p) is how many
// cores phase p kept busy on average; a phase near 1 of 2 is a serial stretch. Off by default:
// that clock is a system call that sums every thread's time, ~0.7 us here and several times that
// on a loaded machine, so it would inflate short steps' phases.
//
// Cost: a scope reads steady_clock twice (and a thread-local pointer), plus the CPU clock when
// measured; nothing allocates. With no
// timer started on the thread (tests calling the decoder directly) a scope is a pointer test.
// The running timer is thread-local so that instrumenting a call site is one line, with no timer
// threaded through the model's signatures. Not thread-safe: one step runs on one thread (GEMM
// threads never enter a scope).
#pragma once

#include <chrono>
#include <cstdint>

namespace openmoe {

// In the metrics' order. Forward / backward are summed over microbatches.
enum class Phase : int {
  kOther,
  kData,              // reading this rank's rows of the batch, agreeing on data errors, counters
  kAttentionForward,  // RMSNorm + attention sub-block
  kAttentionBackward,
  kDenseFfnForward,  // RMSNorm + dense FFN sub-block (also the extra dense FFN of MoE layers)
  kDenseFfnBackward,
  kRouterForward,   // RMSNorm of the MoE sub-block, jitter, router logits, top-k, capacity
  kRouterBackward,  // router softmax / losses backward and the router GEMMs; the MoE norm
  kPermuteForward,  // kept tokens' rows into dispatch order, and the gate-weighted sum back
  kPermuteBackward,
  kDispatchForward,   // rows crossing ranks to their experts: bucketing, counts, rows (EP only)
  kDispatchBackward,  // input gradients back from the experts' ranks (EP only)
  kExpertsForward,    // the expert FFNs on their rows
  kExpertsBackward,
  kCombineForward,     // expert outputs back to the tokens' ranks (EP only)
  kCombineBackward,    // output gradients out to the experts' ranks (EP only)
  kLogitsLossForward,  // final norm, logits GEMM, fused softmax cross-entropy
  kLogitsLossBackward,
  kGradAllReduce,  // gradient sums: shared over all ranks, experts over their replicas
  kOptimizer,      // global gradient norm, finiteness check, the update
  kNumPhases
};
inline constexpr int kNumPhases = static_cast<int>(Phase::kNumPhases);

enum class MpiDetail : int { kCounts, kRows, kNumDetails };
inline constexpr int kNumMpiDetails = static_cast<int>(MpiDetail::kNumDetails);

// "other", "data", "attention_forward", ...: the metrics keys.
const char* PhaseName(Phase phase);
// "counts", "rows".
const char* MpiDetailName(MpiDetail detail);

class PhaseTimer {
 public:
  using Clock = std::chrono::steady_clock;

  // Zeroes every phase and makes this the thread's running timer, in kOther.
  void Start();
  // Charges the time since the last transition and stops (the thread's running timer is again
  // the one before Start, usually none). Prefer ScopedPhaseTimer, which stops on every path.
  void Stop();

  double seconds(Phase p) const { return seconds_[static_cast<int>(p)]; }
  // CPU seconds of the whole process (all threads) while p was the current phase; 0 unless
  // measure_cpu() was on.
  double cpu_seconds(Phase p) const { return cpu_seconds_[static_cast<int>(p)]; }
  // Whether the next Start measures CPU time too (default false). Not while running.
  void set_measure_cpu(bool on) { measure_cpu_ = on; }
  bool measure_cpu() const { return measure_cpu_; }
  // Scopes entered since Start: 0 for a phase this step did not run.
  int64_t calls(Phase p) const { return calls_[static_cast<int>(p)]; }
  double mpi_seconds(MpiDetail d) const { return mpi_seconds_[static_cast<int>(d)]; }
  int64_t mpi_calls(MpiDetail d) const { return mpi_calls_[static_cast<int>(d)]; }
  // Sum over phases: the time from Start to Stop.
  double TotalSeconds() const;

  // CPU seconds used so far by every thread of this process.
  static double ProcessCpuSeconds();

  // The thread's running timer, or null.
  static PhaseTimer* Running() { return running_; }

 private:
  friend class ScopedPhase;
  friend class ScopedMpiTime;

  // Charges now - last_ (wall and process CPU) to the current phase; returns now.
  Clock::time_point Charge() {
    if (measure_cpu_) {
      const double cpu = ProcessCpuSeconds();
      cpu_seconds_[current_] += cpu - last_cpu_;
      last_cpu_ = cpu;
    }
    const Clock::time_point now = Clock::now();
    seconds_[current_] += std::chrono::duration<double>(now - last_).count();
    last_ = now;
    return now;
  }

  static inline thread_local PhaseTimer* running_ = nullptr;
  double seconds_[kNumPhases] = {};
  double cpu_seconds_[kNumPhases] = {};
  int64_t calls_[kNumPhases] = {};
  double mpi_seconds_[kNumMpiDetails] = {};
  int64_t mpi_calls_[kNumMpiDetails] = {};
  int current_ = 0;
  Clock::time_point last_{};
  double last_cpu_ = 0;
  bool measure_cpu_ = false;
  PhaseTimer* outer_ = nullptr;  // the thread's running timer before Start
  bool running_now_ = false;
};

// Starts `timer` for its lifetime (a step), stopping it on every return path.
class ScopedPhaseTimer {
 public:
  explicit ScopedPhaseTimer(PhaseTimer* timer) : timer_(timer) { timer_->Start(); }
  ~ScopedPhaseTimer() { timer_->Stop(); }
  ScopedPhaseTimer(const ScopedPhaseTimer&) = delete;
  ScopedPhaseTimer& operator=(const ScopedPhaseTimer&) = delete;

 private:
  PhaseTimer* timer_;
};

// Runs `phase` from construction to destruction on the thread's running timer (if any).
class ScopedPhase {
 public:
  explicit ScopedPhase(Phase phase) : timer_(PhaseTimer::Running()) {
    if (timer_ == nullptr) return;
    timer_->Charge();
    previous_ = timer_->current_;
    timer_->current_ = static_cast<int>(phase);
    ++timer_->calls_[timer_->current_];
  }
  ~ScopedPhase() {
    if (timer_ == nullptr || !timer_->running_now_) return;
    timer_->Charge();
    timer_->current_ = previous_;
  }
  // Ends the current phase and runs `phase` instead until the next Switch or the scope's end
  // (for consecutive phases of one function without nested braces).
  void Switch(Phase phase) {
    if (timer_ == nullptr || !timer_->running_now_) return;
    timer_->Charge();
    timer_->current_ = static_cast<int>(phase);
    ++timer_->calls_[timer_->current_];
  }
  ScopedPhase(const ScopedPhase&) = delete;
  ScopedPhase& operator=(const ScopedPhase&) = delete;

 private:
  PhaseTimer* timer_;
  int previous_ = 0;
};

// Adds its lifetime to an exchange detail (inclusive; the phase accounting is untouched).
class ScopedMpiTime {
 public:
  explicit ScopedMpiTime(MpiDetail detail)
      : timer_(PhaseTimer::Running()), detail_(static_cast<int>(detail)) {
    if (timer_ != nullptr) start_ = PhaseTimer::Clock::now();
  }
  ~ScopedMpiTime() {
    if (timer_ == nullptr || !timer_->running_now_) return;
    timer_->mpi_seconds_[detail_] +=
        std::chrono::duration<double>(PhaseTimer::Clock::now() - start_).count();
    ++timer_->mpi_calls_[detail_];
  }
  ScopedMpiTime(const ScopedMpiTime&) = delete;
  ScopedMpiTime& operator=(const ScopedMpiTime&) = delete;

 private:
  PhaseTimer* timer_;
  int detail_;
  PhaseTimer::Clock::time_point start_{};
};

}  // namespace openmoe
