#include "launch/metrics.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "model/config.h"

namespace openmoe {

namespace {

double Ratio(int64_t num, int64_t den) { return den > 0 ? static_cast<double>(num) / den : 0.0; }

std::string Duration(double seconds) {
  const int64_t s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s / 60) % 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

}  // namespace

std::string StepRecordJson(const JobSpec& spec, const StepResult& r, const CostBreakdown& v3) {
  const ModelDims dims = DimsFromSpec(spec);
  const DecoderSums& s = r.sums;
  const double n = s.lm.weight > 0 ? s.lm.weight : 1.0;
  const int64_t moe_layers = dims.NumMoeLayers();
  const double groups = static_cast<double>(r.tokens) / spec.router().group_size();
  double load_balance = 0, router_z = 0;
  for (const RouterLossSums& rl : s.router) {
    load_balance += rl.load_balance;
    router_z += rl.z_loss;
  }
  if (moe_layers > 0) {
    load_balance /= moe_layers * groups;
    router_z /= moe_layers * static_cast<double>(r.tokens);
  }
  std::string out = absl::StrFormat(
      "{\"step\":%d,\"loss\":%.8g,\"cross_entropy\":%.8g,\"output_z_loss\":%.8g,"
      "\"load_balance_loss\":%.8g,\"router_z_loss\":%.8g,\"accuracy\":%.6g,"
      "\"learning_rate\":%.6g,\"grad_norm\":%.6g,\"tokens\":%d,\"target_tokens\":%.0f,"
      "\"step_seconds\":%.6g,\"tokens_per_second\":%.6g,"
      "\"v3_predicted\":{\"step_seconds\":%.6g,\"compute_seconds\":%.6g,\"memory_seconds\":%.6g,"
      "\"all_to_all_seconds\":%.6g,\"all_reduce_seconds\":%.6g,\"tokens_per_second\":%.6g,"
      "\"mfu\":%.4g},\"moe_layers\":[",
      r.step, r.loss, s.lm.cross_entropy / n, s.lm.z_loss / n, load_balance, router_z,
      static_cast<double>(s.lm.correct) / n, r.learning_rate, r.grad_norm, r.tokens, s.lm.weight,
      r.seconds, r.seconds > 0 ? r.tokens / r.seconds : 0.0, v3.step_seconds, v3.compute_seconds,
      v3.memory_seconds, v3.all_to_all_seconds, v3.all_reduce_seconds, v3.tokens_per_second,
      v3.mfu);
  bool first = true;
  for (int64_t layer = 0; layer < dims.num_layers; ++layer) {
    if (!dims.IsMoeLayer(layer)) continue;
    const RoutingStats& st = s.routing[layer];
    const RouterLossSums& rl = s.router[layer];
    int64_t routed = 0, kept = 0;
    for (int64_t v : st.routed_per_expert) routed += v;
    for (int64_t v : st.kept_per_expert) kept += v;
    std::vector<std::string> by_choice, by_position;
    const int64_t per_choice = st.tokens;
    for (int64_t v : st.dropped_by_choice) by_choice.push_back(absl::StrFormat("%.6g", Ratio(v, per_choice)));
    for (size_t b = 0; b < st.dropped_by_position_bucket.size(); ++b) {
      by_position.push_back(absl::StrFormat(
          "%.6g", Ratio(st.dropped_by_position_bucket[b], st.routed_by_position_bucket[b])));
    }
    absl::StrAppendFormat(
        &out,
        "%s{\"layer\":%d,\"routed_per_expert\":[%s],\"tokens_per_expert\":[%s],"
        "\"drop_fraction\":%.6g,\"drop_fraction_by_choice\":[%s],"
        "\"drop_fraction_by_position\":[%s],\"fully_dropped_tokens\":%.6g,"
        "\"router_entropy\":%.6g,\"load_balance_loss\":%.8g,\"router_z_loss\":%.8g}",
        first ? "" : ",", layer, absl::StrJoin(st.routed_per_expert, ","),
        absl::StrJoin(st.kept_per_expert, ","), 1.0 - Ratio(kept, routed),
        absl::StrJoin(by_choice, ","), absl::StrJoin(by_position, ","),
        Ratio(st.tokens_fully_dropped, st.tokens), st.tokens > 0 ? st.entropy_sum / st.tokens : 0.0,
        groups > 0 ? rl.load_balance / groups : 0.0,
        r.tokens > 0 ? rl.z_loss / static_cast<double>(r.tokens) : 0.0);
    first = false;
  }
  out += "]}";
  return out;
}

std::string ProgressLine(const StepResult& r, int64_t total_steps, double mean_step_seconds,
                         const CostBreakdown& v3) {
  const double n = r.sums.lm.weight > 0 ? r.sums.lm.weight : 1.0;
  return absl::StrFormat(
      "step %d/%d | loss %.4f | ce %.4f | lr %.2e | %.0f tok/s | %.3fs/step (v3 slice: %.3gms) | "
      "eta %s",
      r.step + 1, total_steps, r.loss, r.sums.lm.cross_entropy / n, r.learning_rate,
      r.seconds > 0 ? r.tokens / r.seconds : 0.0, r.seconds, v3.step_seconds * 1e3,
      Duration(mean_step_seconds * (total_steps - r.step - 1)));
}

MetricsWriter::~MetricsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status MetricsWriter::Open(const std::string& path) {
  path_ = path;
  file_ = std::fopen(path.c_str(), "a");
  if (file_ == nullptr) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open metrics file for appending"));
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
