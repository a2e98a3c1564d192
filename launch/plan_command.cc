#include "launch/plan_command.h"

#include "core/check.h"
#include "launch/job_loader.h"
#include "parallel/cost/cost_model.h"
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

}  // namespace openmoe
