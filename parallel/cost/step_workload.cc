#include "parallel/cost/step_workload.h"

#include <algorithm>

#include "core/check.h"
#include "model/config.h"
#include "model/param_count.h"
#include "model/params.h"
#include "model/router.h"
#include "parallel/cost/attention_scores.h"
#include "parallel/cost/encoder_decoder.h"
#include "parallel/cost/hbm_traffic.h"
#include "parallel/cost/mxu_tiles.h"
#include "parallel/cost/vector_layout.h"

namespace openmoe {

const char* CollectiveKindName(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::kAllReduceShared:
      return "all_reduce_shared";
    case CollectiveKind::kAllReduceExperts:
      return "all_reduce_experts";
    case CollectiveKind::kAllToAll:
      return "all_to_all";
    case CollectiveKind::kAllReduceModel:
      return "all_reduce_model";
    case CollectiveKind::kAllReduceModelExperts:
      return "all_reduce_model_experts";
    case CollectiveKind::kAllReduceModelLoss:
      return "all_reduce_model_loss";
  }
  return "unknown";
}

bool IsModelAxis(CollectiveKind kind) {
  return kind == CollectiveKind::kAllReduceModel ||
         kind == CollectiveKind::kAllReduceModelExperts ||
         kind == CollectiveKind::kAllReduceModelLoss;
}

int64_t ActivationBytes(const JobSpec& spec) {
  if (spec.cost_model().has_activation_bytes()) return spec.cost_model().activation_bytes();
  return spec.train().compute_dtype() == BF16 ? 2 : 4;
}

int64_t AttentionLogitsBytes(const JobSpec& spec) {
  return spec.cost_model().has_attention_logits_bytes() ? spec.cost_model().attention_logits_bytes()
                                                        : ActivationBytes(spec);
}

Remat EffectiveRemat(const JobSpec& spec) {
  return spec.cost_model().has_remat() ? spec.cost_model().remat() : spec.train().remat();
}

double EinsumDispatchFlopsPerGroup(int64_t group_size, int64_t num_experts, int64_t capacity,
                                   int64_t d_model) {
  return 10.0 * static_cast<double>(group_size) * static_cast<double>(num_experts) *
         static_cast<double>(capacity) * static_cast<double>(d_model);
}

StepWorkload EstimateStepWorkload(const JobSpec& spec, const Mesh& mesh) {
  const CostModelConfig& cfg = spec.cost_model();
  const Remat remat = EffectiveRemat(spec);
  const ModelDims dims = DimsFromSpec(spec);
  const int64_t chips = std::max<int64_t>(1, mesh.num_chips);
  const int64_t ep = std::max<int64_t>(1, mesh.expert_parallel);
  const int64_t mp = std::max<int64_t>(1, mesh.model_parallel);
  const ParamLayout layout(dims);
  // What one chip holds: piece 0 of mp of the model-split parameters (all pieces are equal).
  const ParamLayout piece(dims, ParamShard{.model_parts = mp});
  const ParamCounts counts = CountParams(layout);
  const ParamCounts piece_counts = CountParams(piece);
  const TorusShape torus = TorusOf(mesh, cfg.wraparound());
  const double act_bytes = static_cast<double>(ActivationBytes(spec));
  const double grad_bytes = static_cast<double>(cfg.gradient_bytes());

  StepWorkload w;
  w.num_chips = chips;
  w.model_parallel = mp;
  w.num_shards = chips / mp;
  w.microbatches = std::max<int64_t>(1, spec.train().microbatches());
  w.num_moe_layers = dims.NumMoeLayers();
  w.tokens_per_step = spec.train().batch_rows() * spec.train().seq_len();
  w.tokens_per_chip = w.tokens_per_step / w.num_shards;
  w.tokens_per_chip_microbatch = w.tokens_per_chip / w.microbatches;
  const double tokens = static_cast<double>(w.tokens_per_chip);
  const double split = static_cast<double>(mp);

  // Dispatch buffer rows per routing group.
  double rows_per_group = 0;
  int64_t groups_per_chip_microbatch = 0;
  double einsum_flops_per_group = 0;  // DISPATCH_EINSUM only
  double gating_elements_per_token = 0;  // per MoE layer
  // DISPATCH_EINSUM's (E, C) masks as tiled, per token per MoE layer (step_workload.h).
  double mask_elements = 0;
  if (dims.num_experts > 0) {
    const RoutingConfig routing = RoutingFromSpec(spec, /*eval=*/false);
    const double g = static_cast<double>(routing.group_size);
    const double k_g = static_cast<double>(routing.top_k) * g;
    const double e_c = static_cast<double>(routing.num_experts * ExpertCapacity(routing));
    // Experts choosing fill every slot (E x C rows), whatever top_k says.
    rows_per_group = routing.dropless ? k_g
                     : cfg.padded_dispatch() || routing.selection == EXPERTS_CHOOSE
                         ? e_c
                         : std::min(k_g, e_c);
    w.expert_rows_per_token = rows_per_group / g;
    groups_per_chip_microbatch = w.tokens_per_chip_microbatch / routing.group_size;
    const double e = static_cast<double>(routing.num_experts);
    // Per token, forward and backward alike: each of the k top-k passes reads the E probabilities
    // (or the one-hot mask) and writes one; DISPATCH_EINSUM's two (E, C) masks, as tiled in memory
    // (vector_layout.h), written in the forward (combine, dispatch), and in the backward the
    // combine weights' gradient written by its einsum and read by the reduction to the gates.
    double gating_pass_elements = 2 * static_cast<double>(routing.top_k) * e;
    if (cfg.dispatch() == DISPATCH_EINSUM) {
      const int64_t capacity = ExpertCapacity(routing);
      einsum_flops_per_group = EinsumDispatchFlopsPerGroup(routing.group_size, routing.num_experts,
                                                           capacity, dims.d_model);
      mask_elements = TiledElements(routing.num_experts, capacity);
      gating_pass_elements += 2 * mask_elements;
    }
    // REMAT_FULL runs the forward's again.
    gating_elements_per_token = gating_pass_elements * (remat == REMAT_FULL ? 3 : 2);
  }
  // Expert rows a shard holds per microbatch (what it sends, and on average what it receives).
  const double expert_rows =
      rows_per_group * static_cast<double>(groups_per_chip_microbatch);

  const TrainingFlops flops = TrainingFlopsPerToken(layout, spec.train().seq_len());
  w.model_flops_per_chip = flops.total * tokens / split;
  if (dims.num_layers > 0) {
    const double attention_params_per_layer =
        static_cast<double>(counts[Component::kAttention].total) /
        static_cast<double>(dims.num_layers);
    const double attention_flops_per_layer =
        6 * attention_params_per_layer + flops.attention / static_cast<double>(dims.num_layers);
    w.moe_attention_flops_per_chip =
        attention_flops_per_layer * static_cast<double>(w.num_moe_layers) * tokens / split;
  }

  // An encoder-decoder's work beyond the stand-in stack (encoder_decoder.h): the real model's, so
  // in the model FLOPs (and MFU), and recomputed as the stack's is.
  const ModelDims local = piece.local_dims();
  const bool encoder_decoder = cfg.encoder_layers() > 0;
  EncoderDecoderDelta delta;
  if (encoder_decoder) {
    delta = EncoderDecoderPerToken(local, spec.train().seq_len(),
                                   {.encoder_layers = cfg.encoder_layers(),
                                    .target_length = cfg.decoder_target_length()});
    w.encoder_decoder_flops_per_chip = (delta.matmul_flops + delta.attention_flops) * tokens;
    w.model_flops_per_chip += w.encoder_decoder_flops_per_chip;
  }

  // Routing groups of a chip per step, every MoE layer.
  const double moe_groups = static_cast<double>(groups_per_chip_microbatch) *
                            static_cast<double>(w.microbatches) *
                            static_cast<double>(w.num_moe_layers);
  w.dispatch_flops_per_chip = einsum_flops_per_group * moe_groups;
  if (dims.num_experts > 0) {
    // The experts multiply every row of their buffer: r rows per token where the model FLOPs count
    // top_k (6 x one expert's parameters per row, every MoE layer).
    w.capacity_flops_per_chip = 6.0 * static_cast<double>(piece_counts.expert_total) /
                                static_cast<double>(dims.num_experts) *
                                (w.expert_rows_per_token - static_cast<double>(dims.top_k)) *
                                tokens;
  }
  if (remat == REMAT_FULL) {
    w.remat_flops_per_chip = w.model_flops_per_chip / 3 + 0.4 * w.dispatch_flops_per_chip +
                             w.capacity_flops_per_chip / 3;
  } else if (remat == REMAT_ATTENTION && dims.num_layers > 0) {
    const double attention_params = static_cast<double>(counts[Component::kAttention].total);
    w.remat_flops_per_chip = (6 * attention_params + flops.attention) / 3 * tokens / split +
                             (delta.projection_flops + delta.attention_flops) / 3 * tokens;
  }

  if (w.model_flops_per_chip > 0) {
    w.mxu_padding_flops_per_chip = MxuWeightPaddingFlopsPerToken(piece) * tokens *
                                   (1 + w.remat_flops_per_chip / w.model_flops_per_chip);
  }

  const TokenTraffic traffic =
      TrafficPerToken(local, spec.train().seq_len(), w.expert_rows_per_token);
  // The attention's own matmuls; both remat modes run the attention's forward again (its two
  // matmuls' FLOPs, a third of theirs, and their forward S x S passes).
  const bool attention_recomputed = remat == REMAT_FULL || remat == REMAT_ATTENTION;
  const double recomputed = attention_recomputed ? 1.0 : 0.0;
  w.attention_flops_per_chip =
      (flops.attention / split + delta.attention_flops) * tokens * (1 + recomputed / 3);
  w.attention_mxu_utilisation = AttentionMxuUtilisation(local, spec.train().seq_len());
  const ScoreBytes score = AttentionScoreBytes(AttentionLogitsBytes(spec), ActivationBytes(spec),
                                               cfg.attention_position_bias());
  // H S elements per token per layer, and the attention width for the q, k casts.
  const double score_elements = static_cast<double>(local.num_layers) *
                                static_cast<double>(local.num_heads) *
                                static_cast<double>(spec.train().seq_len()) * tokens;
  const double width_elements = static_cast<double>(local.num_layers) *
                                static_cast<double>(local.AttentionWidth()) * tokens;
  w.attention_operand_bytes_per_chip =
      (score.operand_forward * (1 + recomputed) + score.operand_backward) * score_elements;
  w.attention_score_bytes_per_chip =
      (score.elementwise_forward * (1 + recomputed) + score.elementwise_backward) *
          score_elements +
      score.qk_cast * width_elements;
  if (encoder_decoder) {
    // The cross-attention's logits take no position bias.
    const ScoreBytes cross = AttentionScoreBytes(AttentionLogitsBytes(spec), ActivationBytes(spec),
                                                 /*position_bias=*/false);
    w.attention_score_bytes_per_chip +=
        EncoderDecoderScoreBytes(delta, score, cross, recomputed) * tokens;
    w.attention_operand_bytes_per_chip +=
        EncoderDecoderOperandBytes(delta, score, cross, recomputed) * tokens;
  }
  // What the recomputation runs again besides the S x S passes (hbm_traffic.h).
  const double recomputed_elements = remat == REMAT_FULL        ? traffic.layer_forward_elements
                                     : remat == REMAT_ATTENTION ? traffic.attention_forward_elements
                                                                : 0.0;
  w.recomputed_bytes_per_chip = recomputed_elements * act_bytes * tokens;
  w.gating_bytes_per_chip = gating_elements_per_token * static_cast<double>(w.num_moe_layers) *
                            act_bytes * tokens;
  w.elementwise_bytes_per_chip = (traffic.elementwise_elements + delta.elementwise_elements) *
                                     act_bytes * tokens +
                                 w.attention_score_bytes_per_chip + w.recomputed_bytes_per_chip +
                                 w.gating_bytes_per_chip;
  double saved = traffic.saved_elements;
  if (remat == REMAT_ATTENTION) {
    saved -= traffic.attention_internal_elements;
  } else if (remat == REMAT_FULL && dims.num_layers > 0) {
    saved = traffic.layer_input_elements +
            traffic.saved_elements / static_cast<double>(dims.num_layers);
  }
  // The einsums' backward reads both masks: each MoE layer keeps them (REMAT_FULL: the layer
  // being recomputed, counted as the average layer's share as above).
  const double saved_masks = 2 * mask_elements * static_cast<double>(w.num_moe_layers);
  saved += remat == REMAT_FULL && dims.num_layers > 0
               ? saved_masks / static_cast<double>(dims.num_layers)
               : saved_masks;
  w.activation_bytes_per_chip =
      saved * act_bytes * static_cast<double>(w.tokens_per_chip_microbatch);

  const ChipMemory memory = MemoryPerChip(piece, spec, ep);
  w.cores_per_chip = std::max<int64_t>(1, spec.topology().cores_per_chip());
  w.state_bytes_per_chip = memory.total_bytes;
  w.optimizer_bytes_per_chip = static_cast<double>(w.cores_per_chip) *
                               static_cast<double>(memory.params) * grad_bytes *
                               static_cast<double>(4 + 2 * (w.microbatches - 1));

  w.overlap_grad_reduce = spec.train().overlap_grad_reduce();
  w.grad_bucket_bytes = static_cast<double>(spec.train().grad_bucket_mb()) * 1024 * 1024;
  w.grad_parts = GradPartsInBackwardOrder(piece, spec.train().seq_len(), ep, grad_bytes,
                                          spec.train().batch_rows() * spec.train().seq_len());

  // Gradient all-reduce of the shared parameters over the chips of one model coord.
  CollectiveWork shared;
  shared.kind = CollectiveKind::kAllReduceShared;
  shared.footprint = FootprintOf(torus, ModelPeerChips(mesh, 0));
  shared.group_size = chips / mp;
  shared.num_groups = mp;
  shared.bytes_per_chip =
      static_cast<double>(piece_counts.total - piece_counts.expert_total) * grad_bytes;
  shared.calls = 1;
  w.collectives.push_back(shared);

  if (dims.num_experts > 0) {
    CollectiveWork experts;
    experts.kind = CollectiveKind::kAllReduceExperts;
    experts.footprint = FootprintOf(torus, ExpertReplicaChips(mesh, 0));
    experts.group_size = chips / (ep * mp);
    experts.num_groups = ep * mp;
    experts.bytes_per_chip =
        static_cast<double>(piece_counts.expert_total) / static_cast<double>(ep) * grad_bytes;
    experts.calls = 1;
    w.collectives.push_back(experts);

    CollectiveWork a2a;
    a2a.kind = CollectiveKind::kAllToAll;
    a2a.footprint = FootprintOf(torus, ExpertGroupChips(mesh, 0));
    a2a.group_size = ep;
    a2a.num_groups = chips / ep;
    a2a.bytes_per_chip = expert_rows * static_cast<double>(dims.d_model) * act_bytes;
    a2a.calls = 4 * w.num_moe_layers * w.microbatches;
    w.collectives.push_back(a2a);
  }

  if (mp > 1) {
    const Footprint group = FootprintOf(torus, ModelGroupChips(mesh, 0));
    auto model_collective = [&](CollectiveKind kind, double bytes, int64_t calls_per_microbatch) {
      CollectiveWork c;
      c.kind = kind;
      c.footprint = group;
      c.group_size = mp;
      c.num_groups = chips / mp;
      c.bytes_per_chip = bytes;
      c.calls = calls_per_microbatch * w.microbatches;
      w.collectives.push_back(c);
    };
    // The shared experts of an MoE layer all-reduce as a dense FFN does.
    const int64_t ffns = (dims.num_layers - w.num_moe_layers) +
                         (dims.extra_dense_ffn ? w.num_moe_layers : 0) +
                         (dims.num_shared_experts > 0 ? w.num_moe_layers : 0);
    const double t_mb = static_cast<double>(w.tokens_per_chip_microbatch);
    const double d = static_cast<double>(dims.d_model);
    model_collective(CollectiveKind::kAllReduceModel, t_mb * d * act_bytes,
                     2 * dims.num_layers + 2 * ffns + 2);
    if (dims.num_experts > 0) {
      model_collective(CollectiveKind::kAllReduceModelExperts, expert_rows * d * act_bytes,
                       2 * w.num_moe_layers);
    }
    constexpr double kLossValueBytes = 4;  // the cross-entropy's reductions are fp32
    model_collective(CollectiveKind::kAllReduceModelLoss, t_mb * kLossValueBytes, 3);
  }
  return w;
}

}  // namespace openmoe
