// `openmoe plan --search`: every (data, expert, model) layout of a job's topology that the job
// allows, predicted by the TPU v3 cost model (cost_model.h) and ranked by step time.
//
// Candidates are every pair (expert_parallel ep, model_parallel mp) with ep * mp dividing the
// chips (ep 1 only for a dense model); data_parallel is the number of data shards, chips / mp,
// out of which the expert axis is carved (parallel/mesh.h), so data_parallel * model_parallel =
// chips and each expert's piece sits on data_parallel / ep shards. Which candidates are valid is
// the caller's validator (the job loader's ValidateJob on the job with those mesh fields: ep
// divides the experts, mp the heads, d_ff, expert d_ff and padded vocabulary, the batch divides
// into shards x microbatches, routing groups stay whole), so the rules live in one place.
// A valid layout that does not fit in HBM at the job's train.microbatches is predicted again at
// the fewest larger microbatch counts the validator accepts, and listed with the first that fits
// (less activation memory per microbatch; more calls and gradient-accumulation traffic), or at the
// job's count, not fitting, when none does. Every layout appears once.
// Ranking: predicted step seconds ascending (ties keep the candidates' order).
// Nothing is allocated; the 34B config on 512 chips searches in well under a second.
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "parallel/cost/cost_model.h"
#include "proto/job.pb.h"

namespace openmoe {

struct LayoutPrediction {
  int64_t data_parallel = 0;  // data shards: num_chips / model_parallel
  int64_t expert_parallel = 0;
  int64_t model_parallel = 0;
  int64_t microbatches = 0;         // the job's, or the fewest larger that fit (see above)
  bool raised_microbatches = false;  // microbatches > the job's
  CostBreakdown cost;
};

struct LayoutSearch {
  std::string name;  // model.name
  std::string chip;
  int64_t num_chips = 0, torus_x = 0, torus_y = 0;
  int64_t batch_rows = 0, seq_len = 0, microbatches = 0;
  int64_t candidates = 0;              // (ep, mp) pairs tried
  std::vector<LayoutPrediction> layouts;  // the valid ones, ranked
  std::string first_rejection;         // why (ep 1, mp 1) or else the first candidate failed
};

// `spec` with mesh.expert_parallel, mesh.model_parallel and train.microbatches set.
JobSpec WithLayout(const JobSpec& spec, int64_t expert_parallel, int64_t model_parallel,
                   int64_t microbatches);

// Every candidate (ep, mp) of spec's topology, in increasing mp then ep.
std::vector<std::pair<int64_t, int64_t>> LayoutCandidates(const JobSpec& spec);

// Predicts every candidate `validate` accepts at the job's microbatches and ranks them. spec.cost_model() must pass
// ValidateCostModel.
LayoutSearch SearchLayouts(const JobSpec& spec,
                           const std::function<absl::Status(const JobSpec&)>& validate);

// A table, best first, marking which fit in HBM, then the best layout that fits.
void PrintLayoutSearchText(const LayoutSearch& search, std::ostream& out);
// {"name", "num_chips", ..., "layouts": [{"data_parallel", "expert_parallel", "model_parallel",
// "step_seconds", "fits", ...}, ...], "best_fitting": {...} or null}: valid JSON, ranked.
void PrintLayoutSearchJson(const LayoutSearch& search, std::ostream& out);

}  // namespace openmoe
