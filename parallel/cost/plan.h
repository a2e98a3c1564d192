// `openmoe plan`: what a job would be, without running it: the mesh, parameter counts by
// component (total and activated), training FLOPs per token and step, and parameter + gradient +
// Adafactor memory per chip. Needs no MPI ranks and allocates no parameters, so it sizes the 34B
// config on a laptop.
//
// ComputePlan gathers the numbers into a PlanReport; the printers only format it. The last section
// is the TPU v3 cost model's prediction for the job's slice: step time and its breakdown
// (compute, memory-bound ops, all-to-all, all-reduce), every collective with its group's
// placement on the torus, tokens/s, MFU, and whether params + grads + optimizer state + saved
// activations fit in a chip's HBM. With mesh.model_parallel > 1 the memory and the prediction are
// of one chip's piece (model-split parameters / model_parallel) and the collectives include the
// model axis's all-reduces (step_workload.h).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "model/config.h"
#include "model/param_count.h"
#include "parallel/cost/cost_model.h"
#include "proto/job.pb.h"

namespace openmoe {

struct PlanReport {
  std::string name;  // model.name
  ModelDims dims;
  int64_t num_moe_layers = 0;

  // Mesh (parallel/mesh.h). A model group of model_parallel consecutive chips holds one data
  // shard (every chip is one when model_parallel is 1); the expert axis is carved out of the data
  // axis (the shards).
  std::string chip;
  int64_t num_chips = 0;
  int64_t torus_x = 0, torus_y = 0;
  int64_t chips_per_host = 0;
  int64_t num_hosts = 0;         // ceil(num_chips / chips_per_host)
  int64_t expert_parallel = 0;   // shards in one expert group
  int64_t model_parallel = 1;    // chips in one model group
  int64_t data_parallel = 0;     // data shards: num_chips / model_parallel
  int64_t experts_per_chip = 0;  // of every MoE layer: num_experts / expert_parallel (each chip
                                 // of a model group holds a 1 / model_parallel slice of them)
  int64_t expert_replicas = 0;   // shards holding each expert: data_parallel / expert_parallel

  // Batch.
  int64_t batch_rows = 0, seq_len = 0, microbatches = 0;
  int64_t tokens_per_step = 0;             // batch_rows * seq_len
  int64_t tokens_per_chip_microbatch = 0;  // per shard (so per chip) per microbatch
  int64_t group_size = 0;                  // MoE only
  bool experts_choose = false;  // router.selection: dims.top_k is then the mean per token
  int64_t groups_per_chip_microbatch = 0;  // MoE only

  ParamCounts params;
  TrainingFlops flops_per_token;
  double flops_per_step = 0;       // flops_per_token.total * tokens_per_step
  double flops_per_chip_step = 0;  // flops_per_step / num_chips
  ChipMemory memory;               // per chip (its piece of the model-split parameters)
  OptimizerKind optimizer = OPTIMIZER_ADAFACTOR;  // whose state `memory` counts

  // The TPU v3 cost model (parallel/cost/cost_model.h) on this slice, with its constants.
  CostModelConfig cost_config;
  CostBreakdown cost;
};

// `spec` must have passed ValidateJob.
PlanReport ComputePlan(const JobSpec& spec);

void PrintPlanText(const PlanReport& report, std::ostream& out);
// One JSON object (valid JSON, integers exact, keys stable).
void PrintPlanJson(const PlanReport& report, std::ostream& out);


}  // namespace openmoe
