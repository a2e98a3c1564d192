#include "launch/phase_report.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "launch/metrics.h"
#include "model/config.h"
#include "model/param_count.h"
#include "model/params.h"
#include "parallel/cost/step_workload.h"
#include "parallel/mesh.h"

namespace openmoe {

PhaseTimes ReducePhaseTimes(const PhaseTimer& timer, Communicator& comm) {
  // Every rank writes its slot of a (ranks, slots) table; one sum gathers them all, so the
  // maximum and the mean need a single collective.
  constexpr int kSlots = 3 * kNumPhases + 2 * kNumMpiDetails;
  constexpr int kCpu = 2 * kNumPhases + 2 * kNumMpiDetails;  // first CPU-seconds slot
  const int ranks = comm.size();
  std::vector<double> table(static_cast<size_t>(ranks) * kSlots, 0.0);
  double* mine = table.data() + static_cast<size_t>(comm.rank()) * kSlots;
  for (int p = 0; p < kNumPhases; ++p) {
    mine[p] = timer.seconds(static_cast<Phase>(p));
    mine[kNumPhases + p] = static_cast<double>(timer.calls(static_cast<Phase>(p)));
    mine[kCpu + p] = timer.cpu_seconds(static_cast<Phase>(p));
  }
  for (int d = 0; d < kNumMpiDetails; ++d) {
    mine[2 * kNumPhases + d] = timer.mpi_seconds(static_cast<MpiDetail>(d));
    mine[2 * kNumPhases + kNumMpiDetails + d] =
        static_cast<double>(timer.mpi_calls(static_cast<MpiDetail>(d)));
  }
  PhaseTimes t;
  t.cpu_measured = timer.measure_cpu();
  for (int p = 0; p < kNumPhases; ++p) t.local[p] = mine[p];
  for (int d = 0; d < kNumMpiDetails; ++d) t.mpi_local[d] = mine[2 * kNumPhases + d];
  comm.AllReduceSum(table.data(), static_cast<int64_t>(table.size()));
  for (int r = 0; r < ranks; ++r) {
    const double* row = table.data() + static_cast<size_t>(r) * kSlots;
    for (int p = 0; p < kNumPhases; ++p) {
      t.max[p] = std::max(t.max[p], row[p]);
      t.mean[p] += row[p] / ranks;
      t.cpu_mean[p] += row[kCpu + p] / ranks;
      t.ran[p] = t.ran[p] || row[kNumPhases + p] > 0;
    }
    for (int d = 0; d < kNumMpiDetails; ++d) {
      t.mpi_max[d] = std::max(t.mpi_max[d], row[2 * kNumPhases + d]);
      t.mpi_mean[d] += row[2 * kNumPhases + d] / ranks;
      t.mpi_ran = t.mpi_ran || row[2 * kNumPhases + kNumMpiDetails + d] > 0;
    }
  }
  return t;
}

PredictedPhases PredictPhases(const JobSpec& spec, const CostBreakdown& v3) {
  PredictedPhases out;
  // The cost model uses only the slice's layout, which one rank hosting every chip also has.
  const absl::StatusOr<Mesh> mesh = MakeMesh(spec, /*world_size=*/1, /*rank=*/0);
  if (!mesh.ok()) return out;
  out.known = true;
  const ModelDims dims = DimsFromSpec(spec);
  const ParamLayout layout(dims);
  const ParamCounts counts = CountParams(layout);
  const TrainingFlops flops = TrainingFlopsPerToken(layout, spec.train().seq_len());
  auto& s = out.seconds;
  auto split = [&](Component c, double extra_flops, Phase forward, Phase backward) {
    if (flops.total <= 0) return;
    const double share =
        (6.0 * static_cast<double>(counts[c].activated) + extra_flops) / flops.total;
    s[static_cast<int>(forward)] += v3.compute_seconds * share / 3;
    s[static_cast<int>(backward)] += v3.compute_seconds * share * 2 / 3;
  };
  split(Component::kAttention, flops.attention, Phase::kAttentionForward,
        Phase::kAttentionBackward);
  split(Component::kDenseFfn, 0, Phase::kDenseFfnForward, Phase::kDenseFfnBackward);
  split(Component::kExtraFfn, 0, Phase::kDenseFfnForward, Phase::kDenseFfnBackward);
  split(Component::kRouter, 0, Phase::kRouterForward, Phase::kRouterBackward);
  split(Component::kExperts, 0, Phase::kExpertsForward, Phase::kExpertsBackward);
  // The decoder times the shared experts' FFN as expert work (model/decoder.cc).
  split(Component::kSharedExperts, 0, Phase::kExpertsForward, Phase::kExpertsBackward);
  split(Component::kLogits, 0, Phase::kLogitsLossForward, Phase::kLogitsLossBackward);
  for (Phase p : {Phase::kDispatchForward, Phase::kCombineForward, Phase::kDispatchBackward,
                  Phase::kCombineBackward}) {
    s[static_cast<int>(p)] = v3.all_to_all_seconds / 4;
  }
  // With train.overlap_grad_reduce the step carries only the exposed part of the gradient
  // reduction (the model axis's all-reduces stay whole), as the measured phase does.
  const double hidden = v3.unoverlapped_step_seconds > 0
                            ? std::max(0.0, v3.unoverlapped_step_seconds - v3.step_seconds)
                            : 0.0;
  s[static_cast<int>(Phase::kGradAllReduce)] = v3.all_reduce_seconds - hidden;
  const double bandwidth = spec.cost_model().hbm_bandwidth();
  const double optimizer =
      bandwidth > 0 ? EstimateStepWorkload(spec, *mesh).optimizer_bytes_per_chip / bandwidth : 0;
  s[static_cast<int>(Phase::kOptimizer)] = std::min(optimizer, v3.memory_seconds);
  out.memory_elementwise = v3.memory_seconds - s[static_cast<int>(Phase::kOptimizer)];
  return out;
}

namespace {

template <typename Values>
std::string Object(const Values& values, const std::array<bool, kNumPhases>& present) {
  std::string out = "{";
  for (int p = 0; p < kNumPhases; ++p) {
    if (!present[p]) continue;
    absl::StrAppend(&out, out.size() > 1 ? "," : "", "\"", PhaseName(static_cast<Phase>(p)),
                    "\":", JsonNumber(values[p]));
  }
  return out;
}

}  // namespace

std::string PhaseTimingJson(const PhaseTimes& t, const PredictedPhases& predicted) {
  std::string out = absl::StrCat(",\"timing\":", Object(t.max, t.ran),
                                 "},\"timing_mean\":", Object(t.mean, t.ran), "}");
  if (t.cpu_measured) absl::StrAppend(&out, ",\"timing_cpu\":", Object(t.cpu_mean, t.ran), "}");
  if (t.mpi_ran) {
    absl::StrAppend(&out, ",\"timing_exchange\":{");
    for (int d = 0; d < kNumMpiDetails; ++d) {
      absl::StrAppend(&out, d > 0 ? "," : "", "\"", MpiDetailName(static_cast<MpiDetail>(d)),
                      "\":", JsonNumber(t.mpi_max[d]));
    }
    for (int d = 0; d < kNumMpiDetails; ++d) {
      absl::StrAppend(&out, ",\"", MpiDetailName(static_cast<MpiDetail>(d)),
                      "_mean\":", JsonNumber(t.mpi_mean[d]));
    }
    out += "}";
  }
  if (predicted.known) {
    std::array<bool, kNumPhases> present{};
    present.fill(true);
    present[static_cast<int>(Phase::kOther)] = present[static_cast<int>(Phase::kData)] = false;
    present[static_cast<int>(Phase::kPermuteForward)] = false;
    present[static_cast<int>(Phase::kPermuteBackward)] = false;
    absl::StrAppend(&out, ",\"timing_predicted\":", Object(predicted.seconds, present),
                    ",\"memory_elementwise\":", JsonNumber(predicted.memory_elementwise), "}");
  }
  return out;
}

std::string PhaseColumn(const PhaseTimes& t) {
  struct Family {
    const char* label;
    std::vector<Phase> phases;
  };
  const Family families[] = {
      {"attn", {Phase::kAttentionForward, Phase::kAttentionBackward}},
      {"ffn", {Phase::kDenseFfnForward, Phase::kDenseFfnBackward}},
      {"router",
       {Phase::kRouterForward, Phase::kRouterBackward, Phase::kPermuteForward,
        Phase::kPermuteBackward}},
      {"experts", {Phase::kExpertsForward, Phase::kExpertsBackward}},
      {"a2a",
       {Phase::kDispatchForward, Phase::kDispatchBackward, Phase::kCombineForward,
        Phase::kCombineBackward}},
      {"logits", {Phase::kLogitsLossForward, Phase::kLogitsLossBackward}},
      {"ar", {Phase::kGradAllReduce}},
      {"opt", {Phase::kOptimizer}},
      {"data", {Phase::kData}},
      {"other", {Phase::kOther}},
  };
  std::string out = " | ms";
  for (const Family& f : families) {
    double ms = 0;
    bool ran = false;
    for (Phase p : f.phases) {
      ms += t.max[static_cast<int>(p)] * 1e3;
      ran = ran || t.ran[static_cast<int>(p)];
    }
    if (ran) absl::StrAppend(&out, absl::StrFormat(" %s %.1f", f.label, ms));
  }
  if (!t.cpu_measured) return out;
  out += " | cores";
  for (const Family& f : families) {
    double wall = 0, cpu = 0;
    for (Phase p : f.phases) {
      wall += t.mean[static_cast<int>(p)];
      cpu += t.cpu_mean[static_cast<int>(p)];
    }
    if (wall > 0) absl::StrAppend(&out, absl::StrFormat(" %s %.2f", f.label, cpu / wall));
  }
  return out;
}

}  // namespace openmoe
