// The step's phase timing as the metrics and the progress line report it: the measured phases of
// core/phase_timer.h reduced over ranks, and the TPU v3 cost model's prediction mapped onto the
// same phase names.
//
// Measured (seconds, summed over microbatches):
//   timing           per phase, the maximum over ranks
//   timing_mean      per phase, the mean over ranks
//   timing_cpu       per phase, CPU seconds of the rank's process (every thread), mean over
//                    ranks: timing_cpu / timing_mean is how many cores the phase kept busy
//                    (only with logging.phase_timing, which turns the CPU clock on)
//   timing_exchange  only where rows cross ranks: "counts" is the time in the counts all-to-all
//                    (a few bytes per rank pair, so nearly all of it is waiting for the slowest
//                    rank to reach the layer), "rows" the time in the row all-to-all-v's (the
//                    transfer, plus waiting where no counts exchange precedes them: the combine
//                    and the backward's); both already inside dispatch_* / combine_*; max and
//                    mean over ranks ("counts", "rows", "counts_mean", "rows_mean")
// A phase no rank ran is absent: dispatch_* / combine_* wherever no row leaves its rank (one
// process, or ranks hosting whole expert groups), router / permute / experts in a dense model. On
// one rank the phases add up to the step time; over ranks each rank's do.
//
// Predicted (timing_predicted, seconds on a real v3 slice of the job's topology, from the same
// CostBreakdown as v3_predicted): compute split over phases by their share of the model FLOPs
// (6 x activated parameters of each component, attention also 12 L H hd S; 1/3 forward, 2/3
// backward), the exposed all-to-all split evenly over dispatch / combine x forward / backward,
// all_reduce (less what the overlapped gradient reduction hides) as grad_all_reduce, the optimizer's HBM traffic as optimizer, and the rest of the
// memory-bound time as memory_elementwise (spread over every phase; the model does not split it).
// They add up to v3_predicted.step_seconds. There is no predicted data or other.
#pragma once

#include <array>
#include <string>

#include "core/phase_timer.h"
#include "parallel/communicator.h"
#include "parallel/cost/cost_model.h"
#include "proto/job.pb.h"

namespace openmoe {

struct PhaseTimes {
  std::array<double, kNumPhases> max{}, mean{}, local{};  // local: this rank's
  std::array<double, kNumPhases> cpu_mean{};              // process CPU seconds, mean over ranks
  bool cpu_measured = false;                              // the timer read the CPU clock
  std::array<bool, kNumPhases> ran{};                     // some rank entered the phase
  std::array<double, kNumMpiDetails> mpi_max{}, mpi_mean{}, mpi_local{};
  bool mpi_ran = false;  // some rank exchanged rows with another
};

// Collective over `comm` (one all-reduce of ranks x (3 phases + 2 details) doubles). `timer` must be
// stopped.
PhaseTimes ReducePhaseTimes(const PhaseTimer& timer, Communicator& comm);

struct PredictedPhases {
  bool known = false;  // false when the spec has no mesh of its own (nothing predicted)
  std::array<double, kNumPhases> seconds{};  // 0 for data and other
  double memory_elementwise = 0;
};

// `v3` is PredictStepTime(spec, mesh) (or any breakdown to split the same way).
PredictedPhases PredictPhases(const JobSpec& spec, const CostBreakdown& v3);

// `,"timing":{...},"timing_mean":{...}[,"timing_exchange":{...}],"timing_predicted":{...}` for
// the step record (numbers as JsonNumber).
std::string PhaseTimingJson(const PhaseTimes& times, const PredictedPhases& predicted);

// The progress column: " | ms attn 3.1 ffn 4.2 router 0.3 experts 2.0 a2a 0.4 logits 1.1 ar 0.2
// opt 1.5 data 0.1 other 0.2 | cores attn 1.9 ffn 1.4 ...": milliseconds of forward + backward,
// the maximum over ranks, only what ran; router includes permute, a2a is dispatch + combine; then
// the cores each family kept busy (CPU seconds / wall seconds, means over ranks).
std::string PhaseColumn(const PhaseTimes& times);

}  // namespace openmoe
