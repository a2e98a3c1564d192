#include "model/loss_summary.h"

#include "core/check.h"
#include "model/config.h"

namespace openmoe {
namespace {

double Ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

}  // namespace

LossCounts LossCountsFor(const JobSpec& spec, double target_tokens, int64_t tokens) {
  const ModelDims dims = DimsFromSpec(spec);
  LossCounts c;
  c.target_tokens = target_tokens;
  c.tokens = static_cast<double>(tokens);
  c.groups = c.tokens / static_cast<double>(spec.router().group_size());
  for (int64_t layer = 0; layer < dims.num_layers; ++layer)
    if (dims.IsMoeLayer(layer)) c.moe_layers.push_back(layer);
  return c;
}

LossWeights LossWeightsFor(const JobSpec& spec) {
  return {.output_z = spec.loss().output_z_loss_weight(),
          .load_balance = spec.router().aux_loss_weight(),
          .router_z = spec.router().z_loss_weight()};
}

LossScales MakeLossScales(const LossCounts& counts, const LossWeights& weights) {
  const double moe_layers = static_cast<double>(counts.moe_layers.size());
  LossScales s;
  s.lm_normalizer = counts.target_tokens > 0 ? 1.0 / counts.target_tokens : 0.0;
  s.output_z_weight = weights.output_z;
  if (moe_layers > 0) {
    s.load_balance_scale = weights.load_balance / (moe_layers * counts.groups);
    s.router_z_scale = weights.router_z / (moe_layers * counts.tokens);
  }
  return s;
}

void DecoderSums::Add(const DecoderSums& other) {
  lm.cross_entropy += other.lm.cross_entropy;
  lm.z_loss += other.lm.z_loss;
  lm.weight += other.lm.weight;
  lm.correct += other.lm.correct;
  if (router.size() < other.router.size()) router.resize(other.router.size());
  if (routing.size() < other.routing.size()) routing.resize(other.routing.size());
  for (size_t i = 0; i < other.router.size(); ++i) {
    router[i].load_balance += other.router[i].load_balance;
    router[i].z_loss += other.router[i].z_loss;
  }
  for (size_t i = 0; i < other.routing.size(); ++i) routing[i].Add(other.routing[i]);
  loss += other.loss;
}

double ObjectiveOf(const LmLossSums& lm, const std::vector<RouterLossSums>& router,
                   const LossScales& scales) {
  double loss = scales.lm_normalizer * (lm.cross_entropy + scales.output_z_weight * lm.z_loss);
  for (const RouterLossSums& r : router) {
    loss += scales.load_balance_scale * r.load_balance + scales.router_z_scale * r.z_loss;
  }
  return loss;
}

LossSummary SummarizeLosses(const DecoderSums& sums, const LossCounts& counts,
                            const LossWeights& weights) {
  LossSummary s;
  const double n = counts.target_tokens;
  s.target_tokens = n;
  s.cross_entropy = Ratio(sums.lm.cross_entropy, n);
  s.output_z_loss = Ratio(sums.lm.z_loss, n);
  s.accuracy = Ratio(static_cast<double>(sums.lm.correct), n);
  double load_balance = 0, router_z = 0;
  for (int64_t layer : counts.moe_layers) {
    OPENMOE_CHECK_MSG(layer < static_cast<int64_t>(sums.router.size()),
                      "sums without MoE layer %ld", static_cast<long>(layer));
    const RouterLossSums& r = sums.router[layer];
    s.layers.push_back({.layer = layer,
                        .load_balance_loss = Ratio(r.load_balance, counts.groups),
                        .router_z_loss = Ratio(r.z_loss, counts.tokens)});
    load_balance += r.load_balance;
    router_z += r.z_loss;
  }
  const double moe_layers = static_cast<double>(counts.moe_layers.size());
  s.load_balance_loss = Ratio(load_balance, moe_layers * counts.groups);
  s.router_z_loss = Ratio(router_z, moe_layers * counts.tokens);
  s.objective = ObjectiveOf(sums.lm, sums.router, MakeLossScales(counts, weights));
  return s;
}

}  // namespace openmoe
