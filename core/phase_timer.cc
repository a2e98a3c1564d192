#include "core/phase_timer.h"

#include <time.h>

#include "core/check.h"

namespace openmoe {

const char* PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kOther:
      return "other";
    case Phase::kData:
      return "data";
    case Phase::kAttentionForward:
      return "attention_forward";
    case Phase::kAttentionBackward:
      return "attention_backward";
    case Phase::kDenseFfnForward:
      return "dense_ffn_forward";
    case Phase::kDenseFfnBackward:
      return "dense_ffn_backward";
    case Phase::kRouterForward:
      return "router_forward";
    case Phase::kRouterBackward:
      return "router_backward";
    case Phase::kPermuteForward:
      return "permute_forward";
    case Phase::kPermuteBackward:
      return "permute_backward";
    case Phase::kDispatchForward:
      return "dispatch_forward";
    case Phase::kDispatchBackward:
      return "dispatch_backward";
    case Phase::kExpertsForward:
      return "experts_forward";
    case Phase::kExpertsBackward:
      return "experts_backward";
    case Phase::kCombineForward:
      return "combine_forward";
    case Phase::kCombineBackward:
      return "combine_backward";
    case Phase::kLogitsLossForward:
      return "logits_loss_forward";
    case Phase::kLogitsLossBackward:
      return "logits_loss_backward";
    case Phase::kGradAllReduce:
      return "grad_all_reduce";
    case Phase::kOptimizer:
      return "optimizer";
    case Phase::kNumPhases:
      break;
  }
  return "unknown";
}

const char* MpiDetailName(MpiDetail detail) {
  switch (detail) {
    case MpiDetail::kCounts:
      return "counts";
    case MpiDetail::kRows:
      return "rows";
    case MpiDetail::kNumDetails:
      break;
  }
  return "unknown";
}

void PhaseTimer::Start() {
  OPENMOE_CHECK_MSG(!running_now_, "PhaseTimer::Start while it runs");
  for (int i = 0; i < kNumPhases; ++i) seconds_[i] = 0, cpu_seconds_[i] = 0, calls_[i] = 0;
  for (int i = 0; i < kNumMpiDetails; ++i) mpi_seconds_[i] = 0, mpi_calls_[i] = 0;
  current_ = static_cast<int>(Phase::kOther);
  calls_[current_] = 1;
  outer_ = running_;
  running_ = this;
  running_now_ = true;
  if (measure_cpu_) last_cpu_ = ProcessCpuSeconds();
  last_ = Clock::now();
}

double PhaseTimer::ProcessCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

void PhaseTimer::Stop() {
  if (!running_now_) return;
  Charge();
  running_ = outer_;
  running_now_ = false;
}

double PhaseTimer::TotalSeconds() const {
  double total = 0;
  for (double s : seconds_) total += s;
  return total;
}

}  // namespace openmoe
