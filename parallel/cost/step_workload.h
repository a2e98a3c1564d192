// What one training step asks of each chip of a TPU slice, counted from the job spec and its mesh
// without allocating the model: matmul FLOPs, HBM traffic of the memory-bound work, memory held,
// and every collective with its group's torus footprint and bytes. The cost model
// (parallel/cost/cost_model.h) turns this into seconds.
//
// Counts (per chip, per step; tokens_per_chip = batch_rows * seq_len / num_chips):
//   model FLOPs       TrainingFlopsPerToken(layout, seq_len).total * tokens_per_chip (PaLM's
//                     6N + 12 L H hd S, model/param_count.h)
//   elementwise HBM   TrafficPerToken(...).elementwise_elements * ActivationBytes(spec) *
//                     tokens_per_chip (parallel/cost/hbm_traffic.h)
//   optimizer HBM     params held * gradient_bytes * (4 + 2 (microbatches - 1)): Adafactor reads
//                     the parameter and the gradient, reads the gradient again for the update's
//                     RMS, writes the parameter; each extra microbatch reads and writes the
//                     accumulated gradient. Factored second moments are small and not counted.
//   activations       TrafficPerToken(...).saved_elements * activation_bytes * tokens per chip
//                     per microbatch (kept for the backward pass, no rematerialisation)
//   state             params + gradients + Adafactor state, fp32 (MemoryPerChip)
// Collectives (every group of a kind runs at once; footprints in parallel/cost/torus_footprint.h):
//   all_reduce_shared   the non-expert gradients, (total - expert) params * gradient_bytes, over
//                       every chip; once per step
//   all_reduce_experts  each chip's experts' gradients, expert params / ep * gradient_bytes,
//                       over the replicas of its experts (chips j + g * ep); once per step
//   all_to_all          dispatch and combine, forward and backward: 4 per MoE layer per
//                       microbatch, over each expert group (chips [g * ep, (g + 1) * ep)), with
//                       rows per routing group * groups per chip per microbatch * d_model *
//                       activation_bytes per chip; rows per group E * C (padded_dispatch, the
//                       capacity buffer), or min(top_k * G, E * C) (only what can be kept), or
//                       top_k * G (dropless).
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/mesh.h"
#include "parallel/cost/torus_footprint.h"
#include "proto/job.pb.h"

namespace openmoe {

enum class CollectiveKind { kAllReduceShared, kAllReduceExperts, kAllToAll };
// "all_reduce_shared", "all_reduce_experts", "all_to_all".
const char* CollectiveKindName(CollectiveKind kind);

struct CollectiveWork {
  CollectiveKind kind = CollectiveKind::kAllReduceShared;
  Footprint footprint;        // of one group
  int64_t group_size = 0;     // chips per group
  int64_t num_groups = 0;     // groups running at once
  double bytes_per_chip = 0;  // per call
  int64_t calls = 0;          // per step
};

struct StepWorkload {
  int64_t num_chips = 0;
  int64_t microbatches = 0;
  int64_t num_moe_layers = 0;
  int64_t tokens_per_step = 0;
  int64_t tokens_per_chip = 0;             // per step
  int64_t tokens_per_chip_microbatch = 0;
  double expert_rows_per_token = 0;        // rows each token puts in the dispatch buffer

  double model_flops_per_chip = 0;
  double moe_attention_flops_per_chip = 0;  // attention of the MoE layers (for overlap)
  double elementwise_bytes_per_chip = 0;
  double optimizer_bytes_per_chip = 0;
  double activation_bytes_per_chip = 0;     // one microbatch
  int64_t state_bytes_per_chip = 0;         // params + grads + Adafactor, fp32

  std::vector<CollectiveWork> collectives;
};

// `spec` must have passed ValidateJob; `mesh` is its mesh (any world size: only the slice's
// layout is used). Uses spec.cost_model() for element sizes, padded_dispatch and wraparound.
StepWorkload EstimateStepWorkload(const JobSpec& spec, const Mesh& mesh);

// Bytes per activation element (saved activations, elementwise traffic, all-to-all payload):
// cost_model.activation_bytes when the job sets it, else what train.compute_dtype computes in:
// 2 for BF16, 4 for FP32.
int64_t ActivationBytes(const JobSpec& spec);

}  // namespace openmoe
