#include "launch/plan_command.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/check.h"
#include "launch/job_loader.h"
#include "launch/memory_check.h"
#include "parallel/cost/cost_model.h"
#include "parallel/cost/layout_search.h"
#include "parallel/cost/plan.h"

namespace openmoe {
namespace {

// What this trainer holds per rank running the job on 1 and 2 ranks (the memory check's
// estimate, from the decoder's own activation model), where the mesh fits that many ranks.
void PrintHostMemory(const JobSpec& spec, std::ostream& out) {
  constexpr double kMiB = 1024.0 * 1024.0;
  out << "\nhost memory per rank (this trainer, train.remat " << Remat_Name(spec.train().remat())
      << "; launch/memory_check.h)\n";
  for (int ranks : {1, 2}) {
    RankMemoryEstimate e;
    if (!EstimateRankMemory(spec, ranks, 0, &e).ok()) continue;
    out << absl::StrFormat(
        "  %d rank%s x %d chips  %.1f MiB = params %.1f + grads %.1f + optimizer %.1f + saved "
        "activations %.1f + scratch %.1f + expert exchange %.1f + runtime %.1f\n",
        ranks, ranks == 1 ? " " : "s", e.chips_per_rank, e.total_bytes / kMiB,
        e.params_bytes / kMiB, e.grads_bytes / kMiB, e.optimizer_bytes / kMiB,
        e.activation_bytes / kMiB, e.scratch_bytes / kMiB, e.communication_bytes / kMiB,
        e.runtime_bytes / kMiB);
  }
}

}  // namespace

absl::Status RunPlan(const JobSpec& spec, bool json, std::ostream& out) {
  OPENMOE_RETURN_IF_ERROR(ValidateJob(spec, spec.model().name()));
  OPENMOE_RETURN_IF_ERROR(ValidateCostModel(spec.cost_model()));
  const PlanReport report = ComputePlan(spec);
  if (json) {
    PrintPlanJson(report, out);
  } else {
    PrintPlanText(report, out);
    PrintHostMemory(spec, out);
  }
  return absl::OkStatus();
}

absl::Status RunPlanSearch(const JobSpec& spec, bool json, std::ostream& out) {
  OPENMOE_RETURN_IF_ERROR(ValidateCostModel(spec.cost_model()));
  const LayoutSearch search = SearchLayouts(
      spec, [](const JobSpec& candidate) { return ValidateJob(candidate, candidate.model().name()); });
  if (search.layouts.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan --search: no valid layout of topology.num_chips=",
                     spec.topology().num_chips(), " for this job; ", search.first_rejection));
  }
  if (json) {
    PrintLayoutSearchJson(search, out);
  } else {
    PrintLayoutSearchText(search, out);
  }
  return absl::OkStatus();
}

}  // namespace openmoe
