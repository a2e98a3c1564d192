// The TPU v3 cost model: the predicted time of one training step of a job on a real v3 slice of
// the job's topology, with its breakdown, throughput, MFU and whether the chip's memory suffices.
// The constants are JobSpec.cost_model (proto/job.proto, where their defaults and sources are).
// Pure arithmetic: no MPI, no allocation of the model; every rank gets the same answer.
//
// From the per-chip counts of EstimateStepWorkload (parallel/cost/step_workload.h), with P the peak
// FLOP/s, e the matmul efficiency, M the HBM bandwidth, W one ICI link's bandwidth per direction
// (times ici_links_per_chip / 4, the parallel links to each torus neighbour: 1 on v3) and h the
// hop latency:
//   compute     = (model FLOPs + dispatch einsum FLOPs + capacity FLOPs + remat FLOPs + MXU tile
//                 padding FLOPs) / (P e) + attention extra
//   attention   = max(A / (P e u), B / M) for the attention's score and context matmuls (A their
//                 FLOPs, u their MXU utilisation u(head_dim, S), B their S x S operands' bytes:
//                 at head_dim 64 they are HBM-bound unless the half-empty tiles are slower);
//                 attention extra = that - A / (P e) (A / (P e) is in the FLOPs above)
//   memory      = (elementwise bytes + optimizer bytes) / M
//   all_reduce  = sum over all_reduce_* of calls * AllReduceSeconds(footprint, bytes, W, h): the
//                 gradients' and, with a model axis, the activations' all_reduce_model* (those
//                 also in model_all_reduce: a part of all_reduce, not added to it again)
//   all_to_all  = calls * AllToAllSeconds(footprint, bytes, W a, h), a = all_to_all_efficiency
//                 (parallel/cost/collective_cost.h)
//   hidden      = overlap_all_to_all_with_attention ? min(all_to_all, MoE layers' attention
//                 FLOPs / (P e)) : 0
//   unoverlapped step = compute + memory + (all_to_all - hidden) + all_reduce
//   backward    = the last microbatch's backward compute: ((2/3)(model + dispatch + capacity +
//                 MXU padding FLOPs) / (P e) + remat FLOPs / (P e) + (2/3) attention extra + (2/3)
//                 elementwise bytes / M) / microbatches
//                 (earlier microbatches' gradients are not final, so they hide nothing)
//   gradient reduction overlapped (grad_overlap.h): the gradients' all_reduce_shared and
//                 all_reduce_experts in buckets of train.grad_bucket_mb, each bucket's seconds the
//                 two AllReduceSeconds of its bytes, scheduled behind `backward`; exposed = what
//                 ends after it
//   overlapped step   = unoverlapped - (all_reduce_shared + all_reduce_experts) + exposed
//   step        = train.overlap_grad_reduce ? overlapped : unoverlapped
//   tokens/s    = tokens per step / step
//   MFU         = model FLOPs per chip / (step * P)
//   memory fit  = per core (topology.cores_per_chip, a replica per core): params + grads +
//                 Adafactor state (fp32) + the core's share (1 / cores) of the chip's saved
//                 activations of one microbatch <= hbm_capacity_bytes / cores
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "parallel/mesh.h"
#include "parallel/cost/step_workload.h"
#include "proto/job.pb.h"

namespace openmoe {

struct CollectiveCost {
  CollectiveKind kind = CollectiveKind::kAllReduceShared;
  int64_t group_size = 0;
  int64_t num_groups = 0;
  std::string placement;      // the footprint of one group, e.g. "8x2 (x ring, y line)"
  double bytes_per_chip = 0;  // per call
  int64_t calls = 0;          // per step
  double seconds_per_call = 0;
  double seconds = 0;  // per step: calls * seconds_per_call
};

struct CostBreakdown {
  double step_seconds = 0;
  double compute_seconds = 0;
  double memory_seconds = 0;
  double all_to_all_seconds = 0;         // exposed (after overlap)
  double all_to_all_hidden_seconds = 0;  // hidden behind attention (overlap option)
  double all_reduce_seconds = 0;        // every all-reduce, the model axis's included
  double model_all_reduce_seconds = 0;  // of which the model axis's (all_reduce_model*)

  // The gradient reduction overlapped with the backward (train.overlap_grad_reduce).
  bool overlap_grad_reduce = false;
  double unoverlapped_step_seconds = 0;
  double overlapped_step_seconds = 0;
  double grad_reduce_seconds = 0;          // blocking: all_reduce_shared + all_reduce_experts
  double grad_reduce_bucketed_seconds = 0;  // the buckets' reductions, one after another
  double grad_reduce_exposed_seconds = 0;   // of them, what the backward does not hide
  double backward_seconds = 0;              // the window: the last microbatch's backward
  double grad_bucket_bytes = 0;
  int64_t grad_buckets = 0;
  double tokens_per_second = 0;
  double mfu = 0;  // model FLOPs utilisation of the peak

  int64_t tokens_per_step = 0;
  double model_flops_per_chip = 0;
  double dispatch_flops_per_chip = 0;  // DISPATCH_EINSUM's one-hot einsums (not in MFU)
  double capacity_flops_per_chip = 0;  // experts over their buffer beyond top_k (not in MFU)
  double remat_flops_per_chip = 0;     // recomputed forward (not in MFU)
  double mxu_padding_flops_per_chip = 0;  // MXU tiles left empty, as FLOPs (not in MFU)
  double attention_matmul_seconds = 0;    // max(A / (P e u), B / M) above
  double attention_extra_seconds = 0;     // of it, beyond A / (P e): in compute_seconds
  bool attention_hbm_bound = false;       // B / M is the longer
  double hbm_bytes_per_chip = 0;  // elementwise + optimizer traffic
  std::vector<CollectiveCost> collectives;

  // Memory per core (a replica per TensorCore) against the core's HBM.
  int64_t cores_per_chip = 1;
  int64_t state_bytes = 0;       // params + grads + Adafactor, fp32: the whole replica
  int64_t activation_bytes = 0;  // saved for backward, one microbatch, the core's share (estimate)
  int64_t memory_bytes = 0;      // state + activations
  int64_t hbm_capacity_bytes = 0;  // cost_model.hbm_capacity_bytes / cores_per_chip
  bool fits_in_hbm = false;
};

// The cost of a counted workload under `config`. `config` must pass ValidateCostModel.
CostBreakdown PredictStepTime(const StepWorkload& workload, const CostModelConfig& config);

// The trainer's entry point: the predicted v3 step time of `spec` on the slice `mesh` lays out
// (spec.cost_model() holds the constants). Deterministic per job: compute it once.
CostBreakdown PredictStepTime(const JobSpec& spec, const Mesh& mesh);

// OK, or InvalidArgument naming the first bad `cost_model.<field>=<value>`.
absl::Status ValidateCostModel(const CostModelConfig& config);

}  // namespace openmoe
