// `openmoe plan`: validates the job, then computes and prints its plan (parallel/cost/plan.h) as
// text (followed by this trainer's memory per rank on 1 and 2 ranks, launch/memory_check.h), or
// JSON when `json`. `openmoe plan --search`: every valid (data, expert, model) layout of
// the job's topology, ranked by predicted step time (parallel/cost/layout_search.h). Not
// collective; needs no MPI.
#pragma once

#include <ostream>

#include "absl/status/status.h"
#include "proto/job.pb.h"

namespace openmoe {

// ValidateJob's or ValidateCostModel's error for a spec that does not validate (nothing printed),
// so that no caller reaches the plan's divisions with a bad spec.
absl::Status RunPlan(const JobSpec& spec, bool json, std::ostream& out);

// A candidate layout is valid when ValidateJob accepts the job with its mesh fields (the job's own
// mesh fields are ignored). InvalidArgument (nothing printed) when the cost model does not
// validate or no layout is valid (naming why the plain data-parallel layout is not).
absl::Status RunPlanSearch(const JobSpec& spec, bool json, std::ostream& out);

}  // namespace openmoe
