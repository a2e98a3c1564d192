// The run's header and closing summary: metrics records (see launch/metrics.h) and the console
// summary rank 0 prints at the end.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "launch/trainer.h"
#include "proto/job.pb.h"

namespace openmoe {

// "20261201T223000Z-<host>-<pid>": unique per run, sortable by start time.
std::string NewRunId();

struct RunHeader {
  std::string run_id;
  std::string job_description;
  std::string spec_hash;  // XXH64 of the serialized resolved spec, 16 hex digits
  int world_size = 1;
  int64_t num_chips = 1;
  int64_t first_step = 0;     // steps already done when the run starts
  std::string resumed_from;   // the checkpoint loaded, or empty
};
RunHeader MakeRunHeader(const JobSpec& spec, const std::string& job_description, int world_size,
                        const std::string& run_id);
std::string RunHeaderJson(const RunHeader& h);

// Accumulates what the summary reports, one StepResult at a time.
class RunSummary {
 public:
  explicit RunSummary(std::string run_id, int64_t first_step);
  void Add(const StepResult& r);

  // How the run ended ("completed", "stopped by SIGUSR1", "error: ..."), the newest checkpoint
  // (empty: none saved), the metrics file (empty: none), and the whole wall time.
  std::string status = "completed";
  std::string checkpoint;
  std::string metrics_path;
  double wall_seconds = 0;

  std::string Json() const;
  // A few lines for the console.
  std::string Text() const;
  int64_t steps_run() const { return steps_run_; }

 private:
  std::string run_id_;
  int64_t first_step_ = 0;
  int64_t last_step_ = 0;
  int64_t steps_run_ = 0;
  int64_t tokens_ = 0;
  double step_seconds_ = 0;
  double final_loss_ = std::numeric_limits<double>::quiet_NaN();
  double best_loss_ = std::numeric_limits<double>::quiet_NaN();
  int64_t best_step_ = 0;
  double drop_fraction_sum_ = 0;
  int64_t skipped_steps_ = 0;
  std::vector<std::pair<std::string, int64_t>> data_counters_;
};

}  // namespace openmoe
