#include "launch/run_records.h"

#include <unistd.h>

#include <cmath>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/io/json.h"
#include "core/io/checksum.h"
#include "launch/metrics.h"

namespace openmoe {
namespace {

std::string HostName() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

std::string UtcTime(const char* format) {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char out[40];
  std::strftime(out, sizeof(out), format, &utc);
  return out;
}

}  // namespace

std::string NewRunId() {
  return absl::StrFormat("%s-%s-%d", UtcTime("%Y%m%dT%H%M%SZ"), HostName(), getpid());
}

RunHeader MakeRunHeader(const JobSpec& spec, const std::string& job_description, int world_size,
                        const std::string& run_id) {
  RunHeader h;
  h.run_id = run_id;
  h.job_description = job_description;
  const std::string bytes = spec.SerializeAsString();
  h.spec_hash = absl::StrFormat("%016x", Xxh64(bytes.data(), bytes.size()));
  h.world_size = world_size;
  h.num_chips = spec.topology().num_chips();
  return h;
}

std::string RunHeaderJson(const RunHeader& h) {
  return absl::StrCat(
      "{\"record\":\"run_header\",\"run_id\":", JsonQuote(h.run_id),
      ",\"start_time\":", JsonQuote(UtcTime("%Y-%m-%dT%H:%M:%SZ")),
      ",\"unix_time\":", static_cast<int64_t>(std::time(nullptr)), ",\"host\":", JsonQuote(HostName()),
      ",\"world_size\":", h.world_size, ",\"num_chips\":", h.num_chips,
      ",\"spec_hash\":", JsonQuote(h.spec_hash), ",\"job\":", JsonQuote(h.job_description),
      ",\"first_step\":", h.first_step,
      ",\"resumed_from\":", h.resumed_from.empty() ? "null" : JsonQuote(h.resumed_from), "}");
}

RunSummary::RunSummary(std::string run_id, int64_t first_step)
    : run_id_(std::move(run_id)), first_step_(first_step), last_step_(first_step) {}

void RunSummary::Add(const StepResult& r) {
  last_step_ = r.step + 1;
  ++steps_run_;
  tokens_ += r.tokens;
  step_seconds_ += r.seconds;
  skipped_steps_ = r.skipped_steps;
  data_counters_ = r.data_counters;
  if (r.skipped) return;
  final_loss_ = r.loss;
  if (!(r.loss >= best_loss_)) {  // also when best_loss_ is still NaN
    best_loss_ = r.loss;
    best_step_ = r.step + 1;
  }
  drop_fraction_sum_ += DropFraction(r);
}

std::string RunSummary::Json() const {
  std::vector<std::string> data;
  for (const auto& [name, value] : data_counters_)
    data.push_back(absl::StrCat(JsonQuote(name), ":", value));
  const int64_t counted = steps_run_ - skipped_steps_;
  return absl::StrCat(
      "{\"record\":\"summary\",\"run_id\":", JsonQuote(run_id_), ",\"status\":", JsonQuote(status),
      ",\"first_step\":", first_step_, ",\"last_step\":", last_step_,
      ",\"steps_run\":", steps_run_, ",\"skipped_steps\":", skipped_steps_,
      ",\"wall_seconds\":", JsonNumber(wall_seconds),
      ",\"step_seconds\":", JsonNumber(step_seconds_),
      ",\"mean_tokens_per_second\":", JsonNumber(step_seconds_ > 0 ? tokens_ / step_seconds_ : 0.0),
      ",\"final_loss\":", JsonNumber(final_loss_), ",\"best_loss\":", JsonNumber(best_loss_),
      ",\"best_step\":", best_step_,
      ",\"mean_drop_fraction\":", JsonNumber(counted > 0 ? drop_fraction_sum_ / counted : 0.0),
      ",\"data\":{", absl::StrJoin(data, ","), "}",
      ",\"checkpoint\":", checkpoint.empty() ? "null" : JsonQuote(checkpoint),
      ",\"metrics_path\":", metrics_path.empty() ? "null" : JsonQuote(metrics_path), "}");
}

std::string RunSummary::Text() const {
  const int64_t counted = steps_run_ - skipped_steps_;
  std::string out = absl::StrFormat(
      "run summary (%s): steps %d..%d (%d run, %d skipped) in %s | final loss %.4f | best %.4f at "
      "step %d | mean %.0f tok/s | drop fraction %.3f",
      status, first_step_ + (steps_run_ > 0 ? 1 : 0), last_step_, steps_run_, skipped_steps_,
      FormatDuration(wall_seconds), final_loss_, best_loss_, best_step_,
      step_seconds_ > 0 ? tokens_ / step_seconds_ : 0.0,
      counted > 0 ? drop_fraction_sum_ / counted : 0.0);
  std::vector<std::string> data;
  for (const auto& [name, value] : data_counters_) {
    if (value != 0) data.push_back(absl::StrCat(name, " ", value));
  }
  if (!data.empty()) absl::StrAppend(&out, "\n  data: ", absl::StrJoin(data, ", "));
  absl::StrAppend(&out, "\n  checkpoint: ", checkpoint.empty() ? "(none saved)" : checkpoint,
                  " | metrics: ", metrics_path.empty() ? "(not written)" : metrics_path);
  return out;
}

}  // namespace openmoe
