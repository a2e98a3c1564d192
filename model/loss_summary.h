// The loss accounting, written once: how one Decoder call's sums become the optimised objective
// (LossScales, used by the forward and backward) and the reported terms (LossSummary, used by the
// trainer's metrics records and progress line and by `openmoe score`). Both derive from one
// LossCounts, so a reported term and its share of the objective cannot drift apart.
//
// With N real target tokens, T tokens and G = T / group_size routing groups in the whole global
// batch (over all microbatches and chips), and M MoE layers:
//   objective = (CE_sum + z_w * Z_sum) / N + aux_w * LB_sum / (M * G) + rz_w * RZ_sum / (M * T)
#pragma once

#include <cstdint>
#include <vector>

#include "model/losses.h"
#include "model/router.h"
#include "proto/job.pb.h"

namespace openmoe {

// The global counts the losses are normalised by.
struct LossCounts {
  double target_tokens = 0;         // N: the sum of the loss weights
  double tokens = 0;                // T
  double groups = 0;                // G = T / router.group_size
  std::vector<int64_t> moe_layers;  // the MoE layers' indices (M = their number)
};

// The job's loss weights: loss.output_z_loss_weight, router.aux_loss_weight, router.z_loss_weight.
struct LossWeights {
  double output_z = 0;
  double load_balance = 0;
  double router_z = 0;
};

// The counts of a global batch of `tokens` tokens holding `target_tokens` of loss weight, for the
// job's model and router; and the job's weights.
LossCounts LossCountsFor(const JobSpec& spec, double target_tokens, int64_t tokens);
LossWeights LossWeightsFor(const JobSpec& spec);

// How one call's sums become its share of the objective (see the formula above).
struct LossScales {
  double lm_normalizer = 0;        // 1 / N
  double output_z_weight = 0;      // z_w
  double load_balance_scale = 0;   // aux_w / (M * G)
  double router_z_scale = 0;       // rz_w / (M * T)
};
LossScales MakeLossScales(const LossCounts& counts, const LossWeights& weights);

// Sums of one Decoder call (add them up over microbatches and ranks).
struct DecoderSums {
  LmLossSums lm;
  std::vector<RouterLossSums> router;  // (layers) zero for dense layers
  std::vector<RoutingStats> routing;   // (layers) empty for dense layers
  // The objective as LossScales defines it, this call's share (ObjectiveOf).
  double loss = 0;
  void Add(const DecoderSums& other);
};

// The objective of these sums under `scales`: what Decoder::Forward returns as DecoderSums::loss.
double ObjectiveOf(const LmLossSums& lm, const std::vector<RouterLossSums>& router,
                   const LossScales& scales);

// One MoE layer's router losses, normalised as in the objective but not weighted nor divided by M.
struct LayerLossSummary {
  int64_t layer = 0;
  double load_balance_loss = 0;  // LB_sum(layer) / G
  double router_z_loss = 0;      // RZ_sum(layer) / T
};

// The reported terms of sums that cover the whole batch of `counts` (every microbatch and rank).
// Not weighted: objective = cross_entropy + z_w * output_z_loss + aux_w * load_balance_loss +
// rz_w * router_z_loss, up to rounding (it is computed as ObjectiveOf, so for the sums of a
// single call it is bit for bit that call's DecoderSums::loss).
struct LossSummary {
  double target_tokens = 0;      // N
  double cross_entropy = 0;      // CE_sum / N
  double output_z_loss = 0;      // Z_sum / N
  double load_balance_loss = 0;  // LB_sum / (M * G): the mean over MoE layers and groups
  double router_z_loss = 0;      // RZ_sum / (M * T): the mean over MoE layers and tokens
  double accuracy = 0;           // correct / N
  double objective = 0;
  std::vector<LayerLossSummary> layers;  // one per MoE layer, in layer order
};
LossSummary SummarizeLosses(const DecoderSums& sums, const LossCounts& counts,
                            const LossWeights& weights);

}  // namespace openmoe
