// What one training step asks of each chip of a TPU slice, counted from the job spec and its mesh
// without allocating the model: matmul FLOPs, HBM traffic of the memory-bound work, memory held,
// and every collective with its group's torus footprint and bytes. The cost model
// (parallel/cost/cost_model.h) turns this into seconds.
//
// The mesh has three axes (parallel/mesh.h; model innermost): mp = model_parallel chips of a
// model group hold the same rows (a data shard, num_shards = num_chips / mp) and piece `model` of
// every model-split parameter (model/sharding.h: heads, mlp and vocab over the model axis); the
// expert axis is carved out of the shards. With mp = 1 a shard is a chip and every count below is
// what it was before the model axis. T = tokens of a shard per step = batch_rows * seq_len /
// num_shards (tokens_per_chip: each chip of the model group works on all of them), T_mb = T /
// microbatches. The piece layout is ParamLayout(dims, {model_parts = mp}) (model/params.h); its
// local_dims() are the per-chip sizes (heads, d_ff, expert_d_ff, padded vocab divided by mp).
//
// Counts (per chip, per step):
//   encoder-decoder   cost_model.encoder_layers > 0: EncoderDecoderPerToken(local_dims, ...) * T
//                     (parallel/cost/encoder_decoder.h): its FLOPs in the model FLOPs (and so in
//                     REMAT_FULL's), its projections and attention in REMAT_ATTENTION's, its
//                     attention in the attention matmuls; its elementwise elements, S x S passes
//                     and operands in those terms below
//   model FLOPs       TrainingFlopsPerToken(layout, seq_len).total * T / mp (PaLM's
//                     6N + 12 L H hd S, model/param_count.h, shared experts in N; the split
//                     matmuls. The replicated
//                     router's d x E is counted split too: it is < 0.01% of N)
//   elementwise HBM   TrafficPerToken(local_dims, ...).elementwise_elements * ActivationBytes(spec)
//                     * T (parallel/cost/hbm_traffic.h: d_model-wide work is whole on every chip
//                     of the model group, head / mlp / vocab-wide work is split), plus the S x S
//                     softmax passes, AttentionScoreBytes(AttentionLogitsBytes, activation bytes,
//                     attention_position_bias) (parallel/cost/attention_scores.h): (elementwise
//                     forward x (1 + recomputed) + elementwise backward) * L H S * T + qk_cast *
//                     L A * T (local heads, width), recomputed = 1 when remat runs the attention
//                     again; plus what remat runs again besides them: REMAT_ATTENTION
//                     attention_forward_elements, REMAT_FULL layer_forward_elements, times
//                     activation bytes * T
//   optimizer HBM     params held * gradient_bytes * (4 + 2 (microbatches - 1)): Adafactor reads
//                     the parameter and the gradient, reads the gradient again for the update's
//                     RMS, writes the parameter; each extra microbatch reads and writes the
//                     accumulated gradient. Factored second moments are small and not counted.
//   activations       TrafficPerToken(local_dims, ...).saved_elements * activation_bytes * T_mb
//                     (kept for the backward pass) under REMAT_NONE; REMAT_ATTENTION drops the
//                     attention internals (attention_internal_elements); REMAT_FULL keeps each
//                     layer's input (layer_input_elements) plus one layer's saved set while it
//                     is recomputed (saved_elements / L). DISPATCH_EINSUM's backward reads both
//                     masks (the dispatch's input gradient and the combine's expert-output
//                     gradient), so every MoE layer keeps 2 tiled E x C per token (REMAT_FULL:
//                     the recomputed layer's, averaged over the L layers as above)
//   gating HBM        per MoE layer per token, top-k and the cumulative sum that assigns each
//                     choice its position in its expert: 2 k E elements forward and as many
//                     backward (each of the k passes reads the E probabilities / one-hot mask and
//                     writes one); DISPATCH_EINSUM adds the (G, E, C) dispatch and combine masks,
//                     written in the forward, the combine mask's gradient written and read in the
//                     backward: 2 + 2 passes of E x C as tiled in memory (C padded to 128 lanes,
//                     E to 8 sublanes: TiledElements, parallel/cost/vector_layout.h). REMAT_FULL
//                     runs the forward passes again (3 x 2 k E + 6 tiled E x C in all)
//   dispatch FLOPs    DISPATCH_EINSUM (GShard, T5X): dispatch einsum GEC,Gd->ECd and combine
//                     ECd,GEC->Gd, 2 G E C d FLOPs each; backward the dispatch's input gradient
//                     and the combine's gradients for the expert outputs and the combine weights:
//                     10 G E C d per routing group per MoE layer, every chip of a model group
//                     whole (d_model is not split). DISPATCH_GATHER: 0 (index moves, in the
//                     elementwise traffic already). Not model FLOPs: they count in compute time,
//                     not in MFU.
//   capacity FLOPs    the experts multiply every row of their buffer, r = expert_rows_per_token
//                     rows per token (E C / G with padded_dispatch: at capacity factor 2 twice
//                     the top_k choices), where the model FLOPs count top_k: 6 (expert params of
//                     the piece / E) (r - top_k) * T, negative when the buffer drops choices.
//                     Not model FLOPs: compute time, not MFU; REMAT_FULL recomputes a third
//   MXU padding FLOPs what the weight matmuls' dims leave empty of the MXU's 128 x 128 tiles,
//                     costed as FLOPs (parallel/cost/mxu_tiles.h): MxuWeightPaddingFlopsPerToken *
//                     T * (1 + remat FLOPs / model FLOPs) (the recomputed forward pads alike).
//                     Not model FLOPs: compute time, not MFU
//   attention matmuls the score and context matmuls' FLOPs (12 L H hd S * T / mp, in the model
//                     FLOPs; x 4/3 when remat recomputes the attention), their MXU utilisation
//                     u(hd, S), and their S x S operands' HBM bytes ((operand forward x (1 +
//                     recomputed) + operand backward) * L H S * T, attention_scores.h)
//   remat FLOPs       REMAT_FULL: one more forward, model FLOPs / 3 + the einsum forward
//                     (4 G E C d) + capacity FLOPs / 3; REMAT_ATTENTION: the attention
//                     sub-blocks' forward (attention FLOPs / 3). Their elementwise traffic:
//                     elementwise HBM above.
//   cores             topology.cores_per_chip TensorCores per chip, each a device with
//                     hbm_capacity / cores of HBM and a replica of the chip's piece: the chip's
//                     tokens split over its cores, so a core holds the whole state and 1 / cores
//                     of the activations; each core runs the optimizer on its own copy, so the
//                     optimizer traffic per chip is cores times a replica's. The cores' gradient
//                     reduction inside a chip is not modelled (on-chip).
//   state             params + gradients + Adafactor state, fp32, of the piece layout
//                     (MemoryPerChip: model-split parameters / mp, replicated ones whole)
// Collectives (every group of a kind runs at once; footprints in parallel/cost/torus_footprint.h):
// Gradient overlap: train.overlap_grad_reduce and grad_bucket_mb (MiB -> bytes), and the
// gradient's parts in the order the backward makes them final (parallel/cost/grad_overlap.h).
//   all_reduce_shared   the non-expert gradients a chip holds (piece layout's shared params *
//                       gradient_bytes), over the chips of its model coord (ModelPeerChips:
//                       num_chips / mp chips, stride mp; mp groups); once per step
//   all_reduce_experts  each chip's expert pieces' gradients, piece expert params / ep *
//                       gradient_bytes, over the chips of the same model and expert coords
//                       (ExpertReplicaChips); once per step
//   all_to_all          dispatch and combine, forward and backward: 4 per MoE layer per
//                       microbatch, over each expert group (ExpertGroupChips: ep shards' chips
//                       of one model coord, stride mp), with rows per routing group * groups per
//                       shard per microbatch * d_model * activation_bytes per chip (every chip of
//                       a model group sends its shard's whole rows to its peer); rows per group
//                       E * C (padded_dispatch, the capacity buffer), or min(top_k * G, E * C)
//                       (only what can be kept), or top_k * G (dropless).
// The model axis (mp > 1 only; Megatron-style, per microbatch, over each model group,
// ModelGroupChips: mp consecutive chips, num_chips / mp groups):
//   all_reduce_model          T_mb * d_model * activation_bytes per call: forward, one after
//                             attention's row-parallel wo per layer, one after every dense /
//                             extra FFN's wo and every MoE layer's shared experts' wo, one
//                             after the vocab-parallel embedding lookup; backward, one of the
//                             input gradient per attention and FFN sub-block (and shared
//                             experts), and one of d(final hidden) from the logits:
//                             2 L + 2 (dense + extra FFNs + MoE layers with shared experts) + 2
//                             calls per microbatch
//   all_reduce_model_experts  the expert rows a chip's shard holds (rows per group * groups per
//                             shard per microbatch) * d_model * activation_bytes: the expert
//                             outputs before the combine, and their input gradients: 2 per MoE
//                             layer per microbatch
//   all_reduce_model_loss     T_mb fp32 values: the vocab-parallel cross-entropy's max, sum of
//                             exponentials and target logit: 3 per microbatch
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/mesh.h"
#include "parallel/cost/grad_overlap.h"
#include "parallel/cost/torus_footprint.h"
#include "proto/job.pb.h"

namespace openmoe {

enum class CollectiveKind {
  kAllReduceShared,
  kAllReduceExperts,
  kAllToAll,
  kAllReduceModel,
  kAllReduceModelExperts,
  kAllReduceModelLoss,
};
// "all_reduce_shared", "all_reduce_experts", "all_to_all", "all_reduce_model",
// "all_reduce_model_experts", "all_reduce_model_loss".
const char* CollectiveKindName(CollectiveKind kind);
// The collectives of the model axis (activations inside a step, not gradients).
bool IsModelAxis(CollectiveKind kind);

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
  int64_t model_parallel = 1;
  int64_t num_shards = 0;                  // num_chips / model_parallel
  int64_t microbatches = 0;
  int64_t num_moe_layers = 0;
  int64_t tokens_per_step = 0;
  int64_t tokens_per_chip = 0;             // per step: its shard's tokens, T above
  int64_t tokens_per_chip_microbatch = 0;  // T_mb
  double expert_rows_per_token = 0;        // rows each token puts in the dispatch buffer

  double model_flops_per_chip = 0;
  double moe_attention_flops_per_chip = 0;  // attention of the MoE layers (for overlap)
  double elementwise_bytes_per_chip = 0;
  double optimizer_bytes_per_chip = 0;
  double activation_bytes_per_chip = 0;     // one microbatch, the chip's (all its cores)
  int64_t state_bytes_per_chip = 0;         // params + grads + Adafactor, fp32 (one replica)
  int64_t cores_per_chip = 1;               // topology.cores_per_chip
  double dispatch_flops_per_chip = 0;       // DISPATCH_EINSUM's one-hot einsums
  double capacity_flops_per_chip = 0;       // experts over their buffer's rows beyond top_k
  double remat_flops_per_chip = 0;          // recomputed forward work
  double mxu_padding_flops_per_chip = 0;    // tile padding of the weight matmuls (mxu_tiles.h)
  double encoder_decoder_flops_per_chip = 0;  // of the model FLOPs (encoder_decoder.h)
  double attention_flops_per_chip = 0;      // score + context matmuls (in model + remat FLOPs)
  double attention_mxu_utilisation = 1;     // u(head_dim, seq_len)
  double attention_operand_bytes_per_chip = 0;  // their S x S operands through HBM
  double gating_bytes_per_chip = 0;         // of elementwise_bytes_per_chip
  double attention_score_bytes_per_chip = 0;  // of it: S x S softmax passes (attention_scores.h)
  double recomputed_bytes_per_chip = 0;       // of it: what remat runs again, S x S passes apart

  std::vector<CollectiveWork> collectives;

  bool overlap_grad_reduce = false;  // train.overlap_grad_reduce
  double grad_bucket_bytes = 0;      // train.grad_bucket_mb in bytes
  std::vector<GradPart> grad_parts;  // backward order (grad_overlap.h)
};

// 10 G E C d: the one-hot dispatch / combine einsums of one routing group, forward and backward.
double EinsumDispatchFlopsPerGroup(int64_t group_size, int64_t num_experts, int64_t capacity,
                                   int64_t d_model);

// `spec` must have passed ValidateJob; `mesh` is its mesh (any world size: only the slice's
// layout is used). Uses spec.cost_model() for element sizes, padded_dispatch and wraparound.
StepWorkload EstimateStepWorkload(const JobSpec& spec, const Mesh& mesh);

// Bytes per activation element (saved activations, elementwise traffic, all-to-all payload):
// cost_model.activation_bytes when the job sets it, else what train.compute_dtype computes in:
// 2 for BF16, 4 for FP32.
int64_t ActivationBytes(const JobSpec& spec);

// Bytes per element of the attention logits: cost_model.attention_logits_bytes when the job sets
// it, else ActivationBytes(spec).
int64_t AttentionLogitsBytes(const JobSpec& spec);

// The modelled run's rematerialisation: cost_model.remat when the job sets it, else train.remat
// (what this trainer runs).
Remat EffectiveRemat(const JobSpec& spec);

}  // namespace openmoe
