// Measured phase timings of a training step on one process (tiny.pbtxt): they add up to the step
// time, "other" stays small, every phase the layout runs is present and none other is (no
// dispatch / combine when no row leaves the rank, no router / permute / experts in a dense
// model), and the step record carries timing, timing_mean and the prediction beside them.
// Multi-rank layouts, where rows do cross ranks: tests/parallel_mpi/phase_timing_mpi_test.cc.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "core/timer.h"
#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "launch/metrics.h"
#include "launch/phase_report.h"
#include "launch/trainer.h"
#include "parallel/cost/cost_model.h"

namespace openmoe {
namespace {

JobSpec Tiny(std::vector<std::string> sets = {}) {
  absl::StatusOr<JobSpec> spec =
      LoadJob({std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt"}, sets);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *spec;
}

bool Ran(const StepResult& r, Phase p) { return r.timing.ran[static_cast<int>(p)]; }
double Local(const StepResult& r, Phase p) { return r.timing.local[static_cast<int>(p)]; }

double LocalSum(const StepResult& r) {
  double sum = 0;
  for (double s : r.timing.local) sum += s;
  return sum;
}

// A big GEMM phase took real time: over 1% of the step in the largest share of three steps, so
// that a busy machine preempting the process during other phases of one step does not decide
// (under ctest -j2 beside two busy loops one step's expert forward read 0.8%).
void ExpectRealTime(const std::vector<StepResult>& steps, Phase p) {
  double most = 0;
  for (const StepResult& r : steps) most = std::max(most, Local(r, p) / r.seconds);
  EXPECT_GT(most, 0.01) << PhaseName(p);
}

// Steps 2..4 (the first allocates every buffer); for each, the checks every layout shares.
std::vector<StepResult> TimedSteps(const JobSpec& spec) {
  auto trainer = Trainer::Create(spec).value();
  trainer->Step();
  std::vector<StepResult> steps;
  for (int i = 0; i < 3; ++i) steps.push_back(trainer->Step());
  for (const StepResult& r : steps) {
    // One rank: the maximum and the mean over ranks are this rank's own.
    for (int p = 0; p < kNumPhases; ++p) {
      EXPECT_EQ(r.timing.max[p], r.timing.local[p]) << PhaseName(static_cast<Phase>(p));
      EXPECT_EQ(r.timing.mean[p], r.timing.local[p]) << PhaseName(static_cast<Phase>(p));
      // A phase that did not run reads exactly zero.
      if (!r.timing.ran[p]) {
        EXPECT_EQ(r.timing.local[p], 0.0) << PhaseName(static_cast<Phase>(p));
      }
    }
    EXPECT_NEAR(LocalSum(r), r.seconds, 0.1 * r.seconds);
    EXPECT_LE(LocalSum(r), r.seconds + 1e-4);  // the timer stops just after the step clock
    for (Phase p :
         {Phase::kData, Phase::kAttentionForward, Phase::kAttentionBackward,
          Phase::kDenseFfnForward, Phase::kDenseFfnBackward, Phase::kLogitsLossForward,
          Phase::kLogitsLossBackward, Phase::kGradAllReduce, Phase::kOptimizer, Phase::kOther}) {
      EXPECT_TRUE(Ran(r, p)) << PhaseName(p);
    }
    // No row leaves a single process: the exchange phases never run.
    for (Phase p : {Phase::kDispatchForward, Phase::kDispatchBackward, Phase::kCombineForward,
                    Phase::kCombineBackward}) {
      EXPECT_FALSE(Ran(r, p)) << PhaseName(p);
    }
    EXPECT_FALSE(r.timing.mpi_ran);
    EXPECT_EQ(r.timing.mpi_local[static_cast<int>(MpiDetail::kRows)], 0.0);
  }
  ExpectRealTime(steps, Phase::kAttentionBackward);
  ExpectRealTime(steps, Phase::kDenseFfnForward);
  return steps;
}

// What is left to "other" (embedding, residual adds, metric reductions) is small; the least of
// three steps, so that one preemption on a busy machine does not decide.
void ExpectOtherSmall(const std::vector<StepResult>& steps) {
  double least = 1;
  for (const StepResult& r : steps) least = std::min(least, Local(r, Phase::kOther) / r.seconds);
  EXPECT_LT(least, 0.05);
}

TEST(PhaseTiming, MoeOnOneProcessHasEveryPhaseButTheExchange) {
  const std::vector<StepResult> steps = TimedSteps(Tiny());
  ExpectOtherSmall(steps);
  for (const StepResult& r : steps) {
    for (Phase p : {Phase::kRouterForward, Phase::kRouterBackward, Phase::kPermuteForward,
                    Phase::kPermuteBackward, Phase::kExpertsForward, Phase::kExpertsBackward}) {
      EXPECT_TRUE(Ran(r, p)) << PhaseName(p);
    }
  }
  ExpectRealTime(steps, Phase::kExpertsForward);
}

TEST(PhaseTiming, DenseModelHasNoRouterOrExpertPhases) {
  const std::vector<StepResult> steps =
      TimedSteps(Tiny({"model.num_experts=0", "mesh.expert_parallel=1"}));
  ExpectOtherSmall(steps);
  for (const StepResult& r : steps) {
    for (Phase p : {Phase::kRouterForward, Phase::kRouterBackward, Phase::kPermuteForward,
                    Phase::kPermuteBackward, Phase::kExpertsForward, Phase::kExpertsBackward}) {
      EXPECT_FALSE(Ran(r, p)) << PhaseName(p);
    }
  }
}

TEST(PhaseTiming, EveryMicrobatchEntersEachPhaseOnceASubBlock) {
  // tiny: 4 layers, each with attention and a dense FFN (layers 1 and 3: the extra one), MoE in 2.
  for (int micro : {1, 2}) {
    auto trainer = Trainer::Create(Tiny({"train.microbatches=" + std::to_string(micro),
                                         "router.group_size=64"}))
                       .value();
    const Batch batch = trainer->NextLocalBatch().value();
    PhaseTimer timer;
    {
      ScopedPhaseTimer running(&timer);
      trainer->ComputeGradients(batch);
    }
    for (Phase p : {Phase::kAttentionForward, Phase::kAttentionBackward, Phase::kDenseFfnForward,
                    Phase::kDenseFfnBackward}) {
      EXPECT_EQ(timer.calls(p), 4 * micro) << PhaseName(p);
    }
    for (Phase p : {Phase::kRouterForward, Phase::kExpertsForward, Phase::kExpertsBackward,
                    Phase::kLogitsLossForward}) {
      EXPECT_EQ(timer.calls(p), (p == Phase::kLogitsLossForward ? 1 : 2) * micro) << PhaseName(p);
    }
    // The logits' backward: once per logits chunk inside the forward (one chunk here), and the
    // final norm's in the backward.
    EXPECT_EQ(timer.calls(Phase::kLogitsLossBackward), 2 * micro);
    EXPECT_EQ(timer.calls(Phase::kGradAllReduce), 1);
    EXPECT_EQ(timer.calls(Phase::kDispatchForward), 0);
  }
}

// The overhead: the scopes a step enters times the cost of one (measured here, as in
// core's PhaseTimer test) against the step time; tiny has the shortest step, so the largest share.
// Also printed: the same gradients with and without a running timer, interleaved (the medians;
// on a busy machine their difference is noise, which is why the bound is on the count).
TEST(PhaseTiming, TimerOverheadIsUnderOnePercentOfTheStep) {
  auto trainer = Trainer::Create(Tiny()).value();
  trainer->Step();
  const Batch batch = trainer->NextLocalBatch().value();
  std::vector<double> with, without;
  int64_t transitions = 0;
  for (int i = 0; i < 5; ++i) {
    PhaseTimer timer;
    Timer t;
    {
      ScopedPhaseTimer running(&timer);
      trainer->ComputeGradients(batch);
    }
    with.push_back(t.Seconds());
    transitions = 0;
    for (int p = 0; p < kNumPhases; ++p) transitions += timer.calls(static_cast<Phase>(p));
    t.Reset();
    trainer->ComputeGradients(batch);
    without.push_back(t.Seconds());
  }
  PhaseTimer probe;
  Timer t;
  {
    ScopedPhaseTimer running(&probe);
    for (int i = 0; i < 100000; ++i) ScopedPhase p(Phase::kOptimizer);
  }
  const double per_scope = t.Seconds() / 100000;
  std::sort(with.begin(), with.end());
  std::sort(without.begin(), without.end());
  const double estimate = transitions * per_scope / without[2];
  std::printf(
      "tiny: %ld scope entries per forward+backward x %.0f ns = %.2g of the %.1f ms; "
      "medians with / without a running timer: %.2f / %.2f ms\n",
      static_cast<long>(transitions), per_scope * 1e9, estimate, without[2] * 1e3, with[2] * 1e3,
      without[2] * 1e3);
  EXPECT_GT(transitions, 20);
  EXPECT_LT(estimate, 0.01);
}

// The JSON keys sit where the README says, and a phase that did not run has no key.
TEST(PhaseTiming, StepRecordHasMeasuredAndPredictedSideBySide) {
  const JobSpec spec = Tiny();
  auto trainer = Trainer::Create(spec).value();
  const StepResult r = trainer->Step();
  const CostBreakdown v3 = PredictStepTime(spec, trainer->mesh());
  const std::string record = StepRecordJson(spec, r, v3, "test");
  auto object = [&](const std::string& key) {
    const size_t at = record.find("\"" + key + "\":{");
    if (at == std::string::npos) return std::string();
    return record.substr(at, record.find('}', at) - at + 1);
  };
  const std::string timing = object("timing"), mean = object("timing_mean"),
                    predicted = object("timing_predicted");
  ASSERT_FALSE(timing.empty()) << record;
  ASSERT_FALSE(mean.empty()) << record;
  ASSERT_FALSE(predicted.empty()) << record;
  EXPECT_EQ(object("timing_exchange"), "");
  EXPECT_NE(timing.find("\"experts_forward\":"), std::string::npos) << timing;
  EXPECT_NE(timing.find("\"data\":"), std::string::npos) << timing;
  EXPECT_EQ(timing.find("\"dispatch_forward\""), std::string::npos) << timing;
  // The prediction is for a real v3 slice, where the 4 chips' all-to-all does happen.
  EXPECT_NE(predicted.find("\"dispatch_forward\":"), std::string::npos) << predicted;
  EXPECT_NE(predicted.find("\"memory_elementwise\":"), std::string::npos) << predicted;
  EXPECT_EQ(predicted.find("\"data\""), std::string::npos) << predicted;
  // The record's "data" counters stay the first "data" key (readers that search for it).
  EXPECT_LT(record.find("\"data\":{"), record.find("\"timing\":"));
}

TEST(PhaseTiming, PredictedPhasesAddUpToTheCostModelsStep) {
  for (const std::vector<std::string>& sets :
       {std::vector<std::string>{},
        {"model.num_experts=0", "mesh.expert_parallel=1"},
        {"cost_model.overlap_all_to_all_with_attention=true"}}) {
    const JobSpec spec = Tiny(sets);
    const CostBreakdown v3 = PredictStepTime(spec, MakeMesh(spec, 1, 0).value());
    const PredictedPhases p = PredictPhases(spec, v3);
    ASSERT_TRUE(p.known);
    double sum = p.memory_elementwise;
    for (double s : p.seconds) sum += s;
    EXPECT_NEAR(sum, v3.step_seconds, 1e-9 * v3.step_seconds);
    auto at = [&](Phase ph) { return p.seconds[static_cast<int>(ph)]; };
    EXPECT_NEAR(at(Phase::kAttentionBackward), 2 * at(Phase::kAttentionForward), 1e-15);
    // Overlapped (the default), the phase is the reduction less what the backward hides: here
    // only the embedding's untouched rows, which the overlapped path does not send.
    const double hidden = v3.unoverlapped_step_seconds - v3.step_seconds;
    EXPECT_GE(hidden, 0);
    EXPECT_LT(hidden, 0.1 * v3.all_reduce_seconds);
    EXPECT_DOUBLE_EQ(at(Phase::kGradAllReduce), v3.all_reduce_seconds - hidden);
    EXPECT_EQ(at(Phase::kDispatchForward) * 4, v3.all_to_all_seconds);
    EXPECT_GE(p.memory_elementwise, 0);
    EXPECT_EQ(at(Phase::kData), 0.0);
    if (spec.model().num_experts() == 0) {
      EXPECT_EQ(at(Phase::kExpertsForward), 0.0);
      EXPECT_EQ(at(Phase::kRouterForward), 0.0);
      EXPECT_EQ(at(Phase::kDispatchForward), 0.0);
    } else {
      EXPECT_GT(at(Phase::kExpertsForward), 0.0);
    }
  }
}

TEST(PhaseTiming, ProgressColumnShowsWhatRan) {
  auto trainer = Trainer::Create(Tiny()).value();
  const std::string column = PhaseColumn(trainer->Step().timing);
  EXPECT_EQ(column.rfind(" | ms attn ", 0), 0u) << column;
  EXPECT_NE(column.find(" experts "), std::string::npos) << column;
  EXPECT_EQ(column.find(" a2a "), std::string::npos) << column;
}

}  // namespace
}  // namespace openmoe
