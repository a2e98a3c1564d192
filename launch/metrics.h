// The run's metrics file (JSON lines) and the rank-0 progress line.
//
// Records, one JSON object per line, each with a "record" key:
//   "run_header"  once per run (and per resume): run id, start time, host, world size, the spec's
//                 XXH64 hash, the job description, the step the run starts at, what it resumed from
//   "step"        one per step; "step" counts from 1 (the number of steps done after it, as the
//                 progress line and checkpoint step_N directories count)
//   "summary"     once at the end of a run, including a run that stopped on an error
// Every number is finite or null (a NaN loss is written as null), so the file is always valid
// JSON lines. Every record carries "run_id".
#pragma once

#include <cstdint>
#include <cstdio>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "launch/trainer.h"
#include "parallel/cost/cost_model.h"

namespace openmoe {

// A finite number in %.8g, else null.
std::string JsonNumber(double v);

// One step's record (no newline): losses (total and each term, normalised as in the objective),
// learning rate, gradient norm, throughput, skipped-step counts, data counters, the cost model's
// prediction `v3` for this job on a real TPU v3 slice of its topology, and per MoE layer: tokens
// per expert (routed and kept), dropped fraction overall / by choice / by position bucket, router
// entropy, load-balance and router z-loss. The measured phase times `timing`, `timing_mean`,
// `timing_exchange` and the prediction `timing_predicted` are launch/phase_report.h's.
std::string StepRecordJson(const JobSpec& spec, const StepResult& r, const CostBreakdown& v3,
                           const std::string& run_id);

// The fraction of routed token-choices dropped in the step, over every MoE layer (0 for a dense
// model).
double DropFraction(const StepResult& r);

// "step 12/200 | loss 4.1234 | ce 4.1000 | lr 1.00e-02 | 12345 tok/s | 0.52s/step (v3: 1.2ms)
//  | eta 1m23s" with tok/s and s/step the means over the recent steps given.
std::string ProgressLine(const StepResult& r, int64_t total_steps, double recent_tokens_per_second,
                         double recent_step_seconds, const CostBreakdown& v3);

// "1h02m", "3m07s", "12s".
std::string FormatDuration(double seconds);

// The mean throughput over the last `window` steps.
class ThroughputWindow {
 public:
  explicit ThroughputWindow(int64_t window) : window_(window) {}
  void Add(int64_t tokens, double seconds);
  double TokensPerSecond() const;
  double SecondsPerStep() const;

 private:
  int64_t window_;
  std::deque<std::pair<int64_t, double>> steps_;
  int64_t tokens_ = 0;
  double seconds_ = 0;
};

// Rank 0's writer of the metrics file. The file only ever grows by whole lines, except at Open:
//   resumed_step >= 0 (the run continues after that many steps): step records with a larger step
//     (written after the checkpoint by the run that crashed or was stopped) are removed, so that
//     the file holds one record per step; header and summary records stay;
//   resumed_step < 0 (a fresh start) and a non-empty file: the old file is renamed to
//     <path>.<its run id or "old">, never overwritten, and `moved_to` says where.
// The rewrite is atomic (a temporary file, fsync, rename).
class MetricsWriter {
 public:
  MetricsWriter() = default;
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  absl::Status Open(const std::string& path, int64_t resumed_step, std::string* moved_to);
  absl::Status Write(const std::string& line);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace openmoe
