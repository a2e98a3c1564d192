#include "parallel/cost/layout_search.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/check.h"
#include "parallel/cost/plan_format.h"
#include "parallel/mesh.h"

namespace openmoe {
namespace {

using plan_format::JsonNumber;
using plan_format::JsonString;
using plan_format::Seconds;
using plan_format::WithCommas;

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::string LayoutJson(const LayoutPrediction& l) {
  const CostBreakdown& b = l.cost;
  return absl::StrFormat(
      "{\"data_parallel\": %d, \"expert_parallel\": %d, \"model_parallel\": %d, "
      "\"step_seconds\": %s, \"unoverlapped_step_seconds\": %s, "
      "\"overlapped_step_seconds\": %s, \"grad_reduce_exposed_seconds\": %s, \"fits\": %s, \"microbatches\": %d, \"raised_microbatches\": %s, "
      "\"tokens_per_second\": %s, \"mfu\": %s, "
      "\"compute_seconds\": %s, \"memory_seconds\": %s, \"all_to_all_seconds\": %s, "
      "\"all_reduce_seconds\": %s, \"model_all_reduce_seconds\": %s, \"state_bytes\": %d, "
      "\"activation_bytes\": %d, \"memory_bytes\": %d, \"hbm_capacity_bytes\": %d}",
      l.data_parallel, l.expert_parallel, l.model_parallel, JsonNumber(b.step_seconds),
      JsonNumber(b.unoverlapped_step_seconds), JsonNumber(b.overlapped_step_seconds),
      JsonNumber(b.grad_reduce_exposed_seconds),
      b.fits_in_hbm ? "true" : "false", l.microbatches, l.raised_microbatches ? "true" : "false",
      JsonNumber(b.tokens_per_second), JsonNumber(b.mfu),
      JsonNumber(b.compute_seconds), JsonNumber(b.memory_seconds),
      JsonNumber(b.all_to_all_seconds), JsonNumber(b.all_reduce_seconds),
      JsonNumber(b.model_all_reduce_seconds), b.state_bytes, b.activation_bytes, b.memory_bytes,
      b.hbm_capacity_bytes);
}

const LayoutPrediction* BestFitting(const LayoutSearch& s) {
  for (const LayoutPrediction& l : s.layouts) {
    if (l.cost.fits_in_hbm) return &l;
  }
  return nullptr;
}

}  // namespace

JobSpec WithLayout(const JobSpec& spec, int64_t expert_parallel, int64_t model_parallel,
                   int64_t microbatches) {
  JobSpec s = spec;
  s.mutable_mesh()->set_expert_parallel(expert_parallel);
  s.mutable_mesh()->set_model_parallel(model_parallel);
  s.mutable_train()->set_microbatches(microbatches);
  return s;
}

std::vector<std::pair<int64_t, int64_t>> LayoutCandidates(const JobSpec& spec) {
  const int64_t chips = spec.topology().num_chips();
  const bool moe = spec.model().num_experts() > 0;
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t mp = 1; mp <= chips; ++mp) {
    if (chips % mp != 0) continue;
    for (int64_t ep = 1; ep <= (moe ? chips / mp : 1); ++ep) {
      if (chips / mp % ep == 0) out.emplace_back(ep, mp);
    }
  }
  return out;
}

LayoutSearch SearchLayouts(const JobSpec& spec,
                           const std::function<absl::Status(const JobSpec&)>& validate) {
  LayoutSearch s;
  s.name = spec.model().name();
  s.chip = spec.topology().chip();
  s.num_chips = spec.topology().num_chips();
  s.torus_x = spec.topology().torus_x();
  s.torus_y = spec.topology().torus_y();
  s.batch_rows = spec.train().batch_rows();
  s.seq_len = spec.train().seq_len();
  s.microbatches = spec.train().microbatches();
  auto predict = [](const JobSpec& candidate) {
    // The slice as one process hosting every chip, as ComputePlan does.
    const absl::StatusOr<Mesh> slice = MakeMesh(candidate, /*world_size=*/1, /*rank=*/0);
    OPENMOE_CHECK_MSG(slice.ok(), "%s", std::string(slice.status().message()).c_str());
    return PredictStepTime(candidate, *slice);
  };
  for (const auto& [ep, mp] : LayoutCandidates(spec)) {
    ++s.candidates;
    const JobSpec candidate = WithLayout(spec, ep, mp, s.microbatches);
    const absl::Status valid = validate(candidate);
    if (!valid.ok()) {
      if (s.first_rejection.empty() || (ep == 1 && mp == 1)) {
        s.first_rejection = absl::StrFormat("expert_parallel %d, model_parallel %d: %s", ep, mp,
                                            valid.message());
      }
      continue;
    }
    LayoutPrediction l;
    l.data_parallel = s.num_chips / mp;
    l.expert_parallel = ep;
    l.model_parallel = mp;
    l.microbatches = s.microbatches;
    l.cost = predict(candidate);
    // Rows of a shard bound the microbatches (one row each at most).
    const int64_t rows_per_shard = s.batch_rows / l.data_parallel;
    for (int64_t m = s.microbatches + 1; !l.cost.fits_in_hbm && m <= rows_per_shard; ++m) {
      const JobSpec more = WithLayout(spec, ep, mp, m);
      if (!validate(more).ok()) continue;
      const CostBreakdown cost = predict(more);
      if (!cost.fits_in_hbm) continue;
      l.microbatches = m;
      l.raised_microbatches = true;
      l.cost = cost;
    }
    s.layouts.push_back(l);
  }
  std::stable_sort(s.layouts.begin(), s.layouts.end(),
                   [](const LayoutPrediction& a, const LayoutPrediction& b) {
                     return a.cost.step_seconds < b.cost.step_seconds;
                   });
  return s;
}

void PrintLayoutSearchText(const LayoutSearch& s, std::ostream& out) {
  std::string t = absl::StrFormat(
      "openmoe plan --search: %s on %d %s chips (%dx%d), %d rows x %d tokens, %d microbatch%s\n",
      s.name, s.num_chips, s.chip, s.torus_x, s.torus_y, s.batch_rows, s.seq_len, s.microbatches,
      s.microbatches == 1 ? "" : "es");
  int64_t fitting = 0;
  for (const LayoutPrediction& l : s.layouts) fitting += l.cost.fits_in_hbm ? 1 : 0;
  absl::StrAppendFormat(
      &t,
      "%d valid layouts of %d (data_parallel = data shards = chips / model_parallel, the expert "
      "axis carved out of them); %d fit in HBM. Ranked by predicted v3 step time:\n",
      static_cast<int64_t>(s.layouts.size()), s.candidates, fitting);
  const bool overlap = !s.layouts.empty() && s.layouts.front().cost.overlap_grad_reduce;
  absl::StrAppendFormat(&t,
                        "(mb: microbatches; * = raised from the job's %d, the fewest that fit; "
                        "step: %s, no-overlap: the gradient all-reduce after the backward; "
                        "allreduce: blocking, exposed: what overlap leaves of it)\n",
                        s.microbatches,
                        overlap ? "gradient all-reduce overlapped with the backward "
                                  "(train.overlap_grad_reduce)"
                                : "not overlapped (train.overlap_grad_reduce false)");
  absl::StrAppendFormat(&t,
                        "%4s %5s %6s %5s %4s %10s %10s %12s %6s %9s %9s %9s %9s %9s %9s %9s  %s\n",
                        "rank", "data", "expert", "model", "mb", "step", "no-overlap", "tokens/s",
                        "MFU", "compute", "memory", "all2all", "allreduce", "exposed", "(model)",
                        "GiB/core", "fits");
  int64_t rank = 0;
  for (const LayoutPrediction& l : s.layouts) {
    const CostBreakdown& b = l.cost;
    absl::StrAppendFormat(
        &t, "%4d %5d %6d %5d %4s %10s %10s %12s %5.1f%% %9s %9s %9s %9s %9s %9s %9.2f  %s\n",
        ++rank, l.data_parallel, l.expert_parallel, l.model_parallel,
        absl::StrCat(l.microbatches, l.raised_microbatches ? "*" : ""), Seconds(b.step_seconds),
        Seconds(b.unoverlapped_step_seconds),
        WithCommas(static_cast<int64_t>(std::llround(b.tokens_per_second))), 100 * b.mfu,
        Seconds(b.compute_seconds), Seconds(b.memory_seconds), Seconds(b.all_to_all_seconds),
        Seconds(b.all_reduce_seconds), Seconds(b.grad_reduce_exposed_seconds),
        Seconds(b.model_all_reduce_seconds),
        static_cast<double>(b.memory_bytes) / kGiB, b.fits_in_hbm ? "fits" : "-");
  }
  if (s.layouts.empty()) {
    absl::StrAppendFormat(&t, "no valid layout (%s)\n", s.first_rejection);
  } else if (const LayoutPrediction* best = BestFitting(s)) {
    absl::StrAppendFormat(
        &t,
        "best that fits: data_parallel %d, expert_parallel %d, model_parallel %d, %d "
        "microbatches: %s per step, %s tokens/s, MFU %.1f%%, %.2f of %.2f GiB HBM per core\n"
        "  (--set mesh.expert_parallel=%d --set mesh.model_parallel=%d "
        "--set train.microbatches=%d)\n",
        best->data_parallel, best->expert_parallel, best->model_parallel, best->microbatches,
        Seconds(best->cost.step_seconds),
        WithCommas(static_cast<int64_t>(std::llround(best->cost.tokens_per_second))),
        100 * best->cost.mfu, static_cast<double>(best->cost.memory_bytes) / kGiB,
        static_cast<double>(best->cost.hbm_capacity_bytes) / kGiB, best->expert_parallel,
        best->model_parallel, best->microbatches);
  } else {
    t += "no layout fits in HBM, at any microbatch count (try a larger slice)\n";
  }
  out << t;
}

void PrintLayoutSearchJson(const LayoutSearch& s, std::ostream& out) {
  std::string t = "{\n";
  absl::StrAppendFormat(
      &t,
      "  \"name\": %s,\n  \"chip\": %s,\n  \"num_chips\": %d,\n  \"torus_x\": %d,\n  "
      "\"torus_y\": %d,\n  \"batch_rows\": %d,\n  \"seq_len\": %d,\n  \"microbatches\": %d,\n  "
      "\"candidates\": %d,\n  \"layouts\": [",
      JsonString(s.name), JsonString(s.chip), s.num_chips, s.torus_x, s.torus_y, s.batch_rows,
      s.seq_len, s.microbatches, s.candidates);
  bool first = true;
  for (const LayoutPrediction& l : s.layouts) {
    absl::StrAppend(&t, first ? "" : ",", "\n    ", LayoutJson(l));
    first = false;
  }
  const LayoutPrediction* best = BestFitting(s);
  absl::StrAppend(&t, s.layouts.empty() ? "" : "\n  ", "],\n  \"best_fitting\": ",
                  best != nullptr ? LayoutJson(*best) : "null", ",\n  \"first_rejection\": ",
                  JsonString(s.first_rejection), "\n}\n");
  out << t;
}

}  // namespace openmoe
