#include "launch/metrics.h"

#include <cerrno>
#include <cmath>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/check.h"
#include "core/io/file.h"
#include "core/io/json.h"
#include "launch/phase_report.h"
#include "model/config.h"
#include "model/loss_summary.h"

namespace openmoe {

namespace {

double Ratio(int64_t num, int64_t den) { return den > 0 ? static_cast<double>(num) / den : 0.0; }

std::string Numbers(const std::vector<std::string>& v) { return absl::StrJoin(v, ","); }

// What Open needs of an existing record; StepRecordJson and the header/summary writers put
// "record", "run_id" and then (step records) "step" first, so that these are found without a
// full parse of the nested objects.
struct RecordKey {
  std::string record;
  std::string run_id;
  int64_t step = -1;
};

bool ParseRecordKey(const std::string& line, RecordKey* key) {
  std::vector<JsonFieldRequest> fields(2);
  fields[0].name = "record";
  fields[1].name = "run_id";
  if (!ParseJsonObject(line, &fields).ok()) return false;
  key->record = fields[0].value;
  key->run_id = fields[1].value;
  const size_t at = line.find(",\"step\":");
  if (key->record == "step" && at != std::string::npos) {
    const size_t begin = at + 8;
    const size_t end = line.find_first_of(",}", begin);
    if (!absl::SimpleAtoi(line.substr(begin, end - begin), &key->step)) return false;
  }
  return true;
}

}  // namespace

std::string JsonNumber(double v) {
  return std::isfinite(v) ? absl::StrFormat("%.8g", v) : std::string("null");
}

double DropFraction(const StepResult& r) {
  int64_t routed = 0, kept = 0;
  for (const RoutingStats& st : r.sums.routing) {
    for (int64_t v : st.routed_per_expert) routed += v;
    for (int64_t v : st.kept_per_expert) kept += v;
  }
  return routed > 0 ? 1.0 - Ratio(kept, routed) : 0.0;
}

std::string StepRecordJson(const JobSpec& spec, const StepResult& r, const CostBreakdown& v3,
                           const std::string& run_id) {
  const DecoderSums& s = r.sums;
  const LossSummary losses =
      SummarizeLosses(s, LossCountsFor(spec, s.lm.weight, r.tokens), LossWeightsFor(spec));
  std::vector<std::string> data;
  for (const auto& [name, value] : r.data_counters)
    data.push_back(absl::StrCat(JsonQuote(name), ":", value));
  std::string out = absl::StrCat(
      "{\"record\":\"step\",\"run_id\":", JsonQuote(run_id), ",\"step\":", r.step + 1,
      ",\"loss\":", JsonNumber(r.loss), ",\"cross_entropy\":", JsonNumber(losses.cross_entropy),
      ",\"output_z_loss\":", JsonNumber(losses.output_z_loss),
      ",\"load_balance_loss\":", JsonNumber(losses.load_balance_loss),
      ",\"router_z_loss\":", JsonNumber(losses.router_z_loss),
      ",\"accuracy\":", JsonNumber(losses.accuracy),
      ",\"learning_rate\":", JsonNumber(r.learning_rate), ",\"grad_norm\":", JsonNumber(r.grad_norm),
      ",\"skipped\":", r.skipped ? "true" : "false", ",\"skipped_steps\":", r.skipped_steps,
      ",\"tokens\":", r.tokens, ",\"target_tokens\":", JsonNumber(s.lm.weight),
      ",\"step_seconds\":", JsonNumber(r.seconds),
      ",\"tokens_per_second\":", JsonNumber(r.seconds > 0 ? r.tokens / r.seconds : 0.0),
      ",\"data\":{", Numbers(data), "}",
      ",\"exchange\":{\"rows_remote\":", r.exchange.rows_remote,
      ",\"rows_local\":", r.exchange.rows_local, ",\"bytes_remote\":", r.exchange.bytes_remote,
      "}");
  absl::StrAppend(&out, PhaseTimingJson(r.timing, PredictPhases(spec, v3)));
  absl::StrAppend(&out, ",\"v3_predicted\":{\"step_seconds\":", JsonNumber(v3.step_seconds),
                  ",\"compute_seconds\":", JsonNumber(v3.compute_seconds),
                  ",\"memory_seconds\":", JsonNumber(v3.memory_seconds),
                  ",\"all_to_all_seconds\":", JsonNumber(v3.all_to_all_seconds),
                  ",\"all_reduce_seconds\":", JsonNumber(v3.all_reduce_seconds),
                  ",\"tokens_per_second\":", JsonNumber(v3.tokens_per_second),
                  ",\"mfu\":", JsonNumber(v3.mfu), "},\"moe_layers\":[");
  bool first = true;
  for (const LayerLossSummary& ll : losses.layers) {
    const int64_t layer = ll.layer;
    const RoutingStats& st = s.routing[layer];
    int64_t routed = 0, kept = 0;
    for (int64_t v : st.routed_per_expert) routed += v;
    for (int64_t v : st.kept_per_expert) kept += v;
    std::vector<std::string> by_choice, by_position;
    for (int64_t v : st.dropped_by_choice) by_choice.push_back(JsonNumber(Ratio(v, st.tokens)));
    for (size_t b = 0; b < st.dropped_by_position_bucket.size(); ++b) {
      by_position.push_back(
          JsonNumber(Ratio(st.dropped_by_position_bucket[b], st.routed_by_position_bucket[b])));
    }
    absl::StrAppend(
        &out, first ? "" : ",", "{\"layer\":", layer,
        ",\"routed_per_expert\":[", absl::StrJoin(st.routed_per_expert, ","),
        "],\"tokens_per_expert\":[", absl::StrJoin(st.kept_per_expert, ","),
        "],\"drop_fraction\":", JsonNumber(1.0 - Ratio(kept, routed)),
        ",\"drop_fraction_by_choice\":[", Numbers(by_choice),
        "],\"drop_fraction_by_position\":[", Numbers(by_position),
        "],\"fully_dropped_tokens\":", JsonNumber(Ratio(st.tokens_fully_dropped, st.tokens)),
        ",\"router_entropy\":", JsonNumber(st.tokens > 0 ? st.entropy_sum / st.tokens : 0.0),
        ",\"load_balance_loss\":", JsonNumber(ll.load_balance_loss),
        ",\"router_z_loss\":", JsonNumber(ll.router_z_loss));
    if (!r.expert_bias.empty()) {  // (layers, E): this layer's row
      const int64_t experts = static_cast<int64_t>(st.routed_per_expert.size());
      std::vector<std::string> bias;
      for (int64_t e = 0; e < experts; ++e)
        bias.push_back(JsonNumber(r.expert_bias[layer * experts + e]));
      absl::StrAppend(&out, ",\"expert_bias\":[", Numbers(bias), "]");
    }
    out += "}";
    first = false;
  }
  out += "]}";
  return out;
}

std::string FormatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s / 60) % 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

std::string ProgressLine(const StepResult& r, int64_t total_steps, double recent_tokens_per_second,
                         double recent_step_seconds, const CostBreakdown& v3) {
  const double n = r.sums.lm.weight > 0 ? r.sums.lm.weight : 1.0;
  return absl::StrFormat(
      "step %d/%d | loss %.4f | ce %.4f | lr %.2e | %.0f tok/s | %.3fs/step (v3 slice: %.3gms) | "
      "eta %s%s",
      r.step + 1, total_steps, r.loss, r.sums.lm.cross_entropy / n, r.learning_rate,
      recent_tokens_per_second, recent_step_seconds, v3.step_seconds * 1e3,
      FormatDuration(recent_step_seconds * (total_steps - r.step - 1)),
      r.skipped ? absl::StrFormat(" | SKIPPED (non-finite; %d so far)", r.skipped_steps) : "");
}

void ThroughputWindow::Add(int64_t tokens, double seconds) {
  steps_.emplace_back(tokens, seconds);
  tokens_ += tokens;
  seconds_ += seconds;
  if (static_cast<int64_t>(steps_.size()) > window_) {
    tokens_ -= steps_.front().first;
    seconds_ -= steps_.front().second;
    steps_.pop_front();
  }
}

double ThroughputWindow::TokensPerSecond() const { return seconds_ > 0 ? tokens_ / seconds_ : 0.0; }

double ThroughputWindow::SecondsPerStep() const {
  return steps_.empty() ? 0.0 : seconds_ / static_cast<double>(steps_.size());
}

MetricsWriter::~MetricsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status MetricsWriter::Open(const std::string& path, int64_t resumed_step,
                                 std::string* moved_to) {
  path_ = path;
  moved_to->clear();
  if (PathExists(path)) {
    absl::StatusOr<std::string> old = ReadFile(path);
    if (!old.ok()) return old.status();
    std::string kept;
    std::string last_run = "old";
    bool changed = false;
    for (absl::string_view line : absl::StrSplit(*old, '\n', absl::SkipEmpty())) {
      RecordKey key;
      // A line that does not parse is the torn last write of a killed run.
      const bool ok = ParseRecordKey(std::string(line), &key);
      if (ok && !key.run_id.empty()) last_run = key.run_id;
      if (!ok || (resumed_step >= 0 && key.step > resumed_step)) {
        changed = true;
        continue;
      }
      absl::StrAppend(&kept, line, "\n");
    }
    if (resumed_step < 0 && !old->empty()) {
      *moved_to = absl::StrCat(path, ".", last_run);
      for (int i = 1; PathExists(*moved_to); ++i) *moved_to = absl::StrCat(path, ".", last_run, ".", i);
      if (std::rename(path.c_str(), moved_to->c_str()) != 0) {
        return absl::FailedPreconditionError(absl::StrCat(
            "logging.metrics_path=", path, ": cannot move the previous run's metrics to ", *moved_to,
            ": ", std::strerror(errno)));
      }
    } else if (changed) {
      OPENMOE_RETURN_IF_ERROR(WriteFileAtomically(path, kept));
    }
  }
  file_ = std::fopen(path.c_str(), "a");
  if (file_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "logging.metrics_path=", path, ": cannot open for appending: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status MetricsWriter::Write(const std::string& line) {
  if (file_ == nullptr) return absl::OkStatus();
  if (std::fputs(line.c_str(), file_) < 0 || std::fputc('\n', file_) == EOF || std::fflush(file_) != 0) {
    return absl::DataLossError(absl::StrCat(path_, ": write failed (disk full?)"));
  }
  return absl::OkStatus();
}

}  // namespace openmoe
