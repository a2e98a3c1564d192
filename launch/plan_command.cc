#include "launch/plan_command.h"

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "launch/job_loader.h"
#include "parallel/cost/cost_model.h"
#include "parallel/cost/layout_search.h"
#include "parallel/cost/plan.h"

namespace openmoe {

absl::Status RunPlan(const JobSpec& spec, bool json, std::ostream& out) {
  OPENMOE_RETURN_IF_ERROR(ValidateJob(spec, spec.model().name()));
  OPENMOE_RETURN_IF_ERROR(ValidateCostModel(spec.cost_model()));
  const PlanReport report = ComputePlan(spec);
  if (json) {
    PrintPlanJson(report, out);
  } else {
    PrintPlanText(report, out);
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
