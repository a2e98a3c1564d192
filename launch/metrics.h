// Per-step metrics: the JSON-lines record and the rank-0 progress line.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "launch/trainer.h"
#include "parallel/cost_model.h"

namespace openmoe {

// One JSON object (no newline) for a step: losses (total and each term, normalised as in the
// objective), learning rate, gradient norm, throughput, and per MoE layer: tokens per expert
// (routed and kept), dropped fraction overall / by choice / by position bucket, router entropy,
// load-balance and router z-loss.
// `v3` is the cost model's prediction for this job on a real TPU v3 slice of its topology.
std::string StepRecordJson(const JobSpec& spec, const StepResult& r, const CostBreakdown& v3);

// "step 12/200 | loss 4.1234 | ce 4.1000 | lr 1.00e-02 | 12345 tok/s | 0.52s/step (v3: 1.2ms)
//  | eta 1m23s"
std::string ProgressLine(const StepResult& r, int64_t total_steps, double mean_step_seconds,
                         const CostBreakdown& v3);

// Appends JSON lines to a file (appending, so a resumed run extends its history).
class MetricsWriter {
 public:
  MetricsWriter() = default;
  ~MetricsWriter();
  absl::Status Open(const std::string& path);
  absl::Status Write(const std::string& line);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace openmoe
