// `openmoe plan`: validates the job, then computes and prints its plan (parallel/cost/plan.h) as
// text, or JSON when `json`. Not collective; needs no MPI.
#pragma once

#include <ostream>

#include "absl/status/status.h"
#include "proto/job.pb.h"

namespace openmoe {

// ValidateJob's or ValidateCostModel's error for a spec that does not validate (nothing printed),
// so that no caller reaches the plan's divisions with a bad spec.
absl::Status RunPlan(const JobSpec& spec, bool json, std::ostream& out);

}  // namespace openmoe
