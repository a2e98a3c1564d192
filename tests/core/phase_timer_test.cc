// PhaseTimer: exclusive accounting of nested and switched scopes against sleeps timed by an
// independent Timer, inclusive exchange details, no-ops without a running timer, and the cost of
// one scope (the overhead figure of the README's metrics section).
#include "core/phase_timer.h"

#include <time.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "core/timer.h"
#include "gtest/gtest.h"

namespace openmoe {
namespace {

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

TEST(PhaseTimer, NestedScopesCountOnceAndAddUpToTheElapsedTime) {
  PhaseTimer timer;
  Timer outside;
  double attention_scope = 0, experts_scope = 0;
  {
    ScopedPhaseTimer running(&timer);
    ASSERT_EQ(PhaseTimer::Running(), &timer);
    SleepMs(4);  // other
    Timer a;
    {
      ScopedPhase attention(Phase::kAttentionForward);
      SleepMs(6);
      Timer e;
      {
        ScopedPhase experts(Phase::kExpertsForward);
        ScopedMpiTime mpi(MpiDetail::kRows);
        SleepMs(8);
      }
      experts_scope = e.Seconds();
      attention.Switch(Phase::kOptimizer);
      SleepMs(5);
    }
    attention_scope = a.Seconds();
  }
  const double elapsed = outside.Seconds();
  EXPECT_EQ(PhaseTimer::Running(), nullptr);

  const double attention = timer.seconds(Phase::kAttentionForward);
  const double experts = timer.seconds(Phase::kExpertsForward);
  const double optimizer = timer.seconds(Phase::kOptimizer);
  const double other = timer.seconds(Phase::kOther);
  // Each phase got at least its own sleep, and the nested one is not counted in its parent.
  EXPECT_GE(experts, 8e-3);
  EXPECT_LE(experts, experts_scope);
  EXPECT_GE(attention, 6e-3);
  EXPECT_GE(optimizer, 5e-3);
  EXPECT_GE(other, 4e-3);
  EXPECT_LE(attention + experts + optimizer, attention_scope);
  // Between Start and Stop every instant belongs to exactly one phase.
  EXPECT_DOUBLE_EQ(timer.TotalSeconds(), attention + experts + optimizer + other);
  EXPECT_LE(timer.TotalSeconds(), elapsed);
  EXPECT_GE(timer.TotalSeconds(), 23e-3);
  // The detail is inclusive and leaves the phases alone.
  EXPECT_GE(timer.mpi_seconds(MpiDetail::kRows), 8e-3);
  EXPECT_LE(timer.mpi_seconds(MpiDetail::kRows), experts);
  EXPECT_EQ(timer.mpi_calls(MpiDetail::kRows), 1);
  EXPECT_EQ(timer.mpi_calls(MpiDetail::kCounts), 0);
  EXPECT_EQ(timer.calls(Phase::kAttentionForward), 1);
  EXPECT_EQ(timer.calls(Phase::kOptimizer), 1);
  EXPECT_EQ(timer.calls(Phase::kDispatchForward), 0);
  EXPECT_EQ(timer.seconds(Phase::kDispatchForward), 0.0);
}

TEST(PhaseTimer, StartZeroesAndScopesWithoutARunningTimerDoNothing) {
  PhaseTimer timer;
  {
    ScopedPhaseTimer running(&timer);
    ScopedPhase p(Phase::kData);
    SleepMs(2);
  }
  EXPECT_GT(timer.seconds(Phase::kData), 0);
  {
    ScopedPhase p(Phase::kData);  // nothing running: must not touch `timer`
    SleepMs(2);
  }
  EXPECT_EQ(timer.calls(Phase::kData), 1);
  { ScopedPhaseTimer running(&timer); }
  EXPECT_EQ(timer.seconds(Phase::kData), 0.0);
  EXPECT_EQ(timer.calls(Phase::kData), 0);
  EXPECT_EQ(timer.calls(Phase::kOther), 1);
}

TEST(PhaseTimer, ScopeLeftAfterStopChargesNothing) {
  PhaseTimer timer;
  timer.Start();
  {
    ScopedPhase p(Phase::kOptimizer);
    timer.Stop();
    const double total = timer.TotalSeconds();
    SleepMs(2);
    EXPECT_EQ(timer.TotalSeconds(), total);
  }
  EXPECT_EQ(PhaseTimer::Running(), nullptr);
}

TEST(PhaseTimer, NamesAreTheMetricsKeys) {
  EXPECT_STREQ(PhaseName(Phase::kOther), "other");
  EXPECT_STREQ(PhaseName(Phase::kDispatchForward), "dispatch_forward");
  EXPECT_STREQ(PhaseName(Phase::kLogitsLossBackward), "logits_loss_backward");
  EXPECT_STREQ(PhaseName(Phase::kGradAllReduce), "grad_all_reduce");
  EXPECT_STREQ(MpiDetailName(MpiDetail::kCounts), "counts");
  for (int p = 0; p < kNumPhases; ++p) EXPECT_STRNE(PhaseName(static_cast<Phase>(p)), "unknown");
}

// CPU time is charged like wall time: a phase that spins until this thread has used 50 ms of CPU
// is charged at least that (other threads of the process, e.g. OpenBLAS's, may add to any phase),
// and the phases' CPU adds up to the process's CPU between Start and Stop.
TEST(PhaseTimer, ChargesProcessCpuTimeToTheRunningPhase) {
  volatile double sink = 0;
  auto thread_cpu = [] {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
  };
  PhaseTimer timer;
  timer.set_measure_cpu(true);
  const double cpu_before = PhaseTimer::ProcessCpuSeconds();
  {
    ScopedPhaseTimer running(&timer);
    {
      ScopedPhase sleep(Phase::kGradAllReduce);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ScopedPhase spin(Phase::kOptimizer);
    const double until = thread_cpu() + 0.05;
    while (thread_cpu() < until) sink = sink + 1.0;
  }
  const double cpu_during = PhaseTimer::ProcessCpuSeconds() - cpu_before;
  EXPECT_GE(timer.seconds(Phase::kGradAllReduce), 0.1);
  EXPECT_GE(timer.cpu_seconds(Phase::kOptimizer), 0.05);
  double charged = 0;
  for (int p = 0; p < kNumPhases; ++p) charged += timer.cpu_seconds(static_cast<Phase>(p));
  EXPECT_LE(charged, cpu_during);
  EXPECT_GE(charged, cpu_during - 0.005);
  PhaseTimer off;  // the default: no CPU clock, nothing charged
  {
    ScopedPhaseTimer running(&off);
    ScopedPhase spin(Phase::kOptimizer);
    const double until = thread_cpu() + 0.01;
    while (thread_cpu() < until) sink = sink + 1.0;
  }
  EXPECT_EQ(off.cpu_seconds(Phase::kOptimizer), 0.0);
}

// The overhead: one scope (two reads of the wall clock and of the process CPU clock, a system
// call) in a running timer. Printed for the README; the wide bound only catches a scope that
// allocates, locks or sleeps.
TEST(PhaseTimer, OneScopeCostsAFewMicrosecondsAtMost) {
  PhaseTimer timer;
  constexpr int kScopes = 1000000;
  ScopedPhaseTimer running(&timer);
  Timer t;
  for (int i = 0; i < kScopes; ++i) {
    ScopedPhase p(i % 2 == 0 ? Phase::kAttentionForward : Phase::kExpertsForward);
  }
  const double per_scope = t.Seconds() / kScopes;
  std::printf("one ScopedPhase (enter + leave) in a running timer: %.1f ns\n", per_scope * 1e9);
  EXPECT_EQ(timer.calls(Phase::kAttentionForward), kScopes / 2);
  EXPECT_LT(per_scope, 2e-5);
}

}  // namespace
}  // namespace openmoe
