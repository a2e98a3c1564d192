// The loss accounting written once: LossScales and LossSummary against the formula in closed
// form, and a decoder call's loss equal, bit for bit, to the summary's objective.
#include "model/loss_summary.h"

#include <vector>

#include "gtest/gtest.h"
#include "model/decoder.h"
#include "model/params.h"

namespace openmoe {
namespace {

// Hand-made sums of a 4-layer model whose layers 1 and 3 are MoE.
DecoderSums MadeUpSums() {
  DecoderSums s;
  s.lm = {.cross_entropy = 6.0, .z_loss = 3.0, .weight = 3.0, .correct = 2};
  s.router.resize(4);
  s.router[1] = {.load_balance = 4.0, .z_loss = 8.0};
  s.router[3] = {.load_balance = 2.0, .z_loss = 4.0};
  s.routing.resize(4);
  return s;
}

LossCounts MadeUpCounts() {
  return {.target_tokens = 3.0, .tokens = 8.0, .groups = 2.0, .moe_layers = {1, 3}};
}

constexpr LossWeights kWeights{.output_z = 0.1, .load_balance = 0.01, .router_z = 0.001};

TEST(LossSummary, TermsInClosedForm) {
  const LossSummary s = SummarizeLosses(MadeUpSums(), MadeUpCounts(), kWeights);
  EXPECT_DOUBLE_EQ(s.target_tokens, 3.0);
  EXPECT_DOUBLE_EQ(s.cross_entropy, 2.0);
  EXPECT_DOUBLE_EQ(s.output_z_loss, 1.0);
  EXPECT_DOUBLE_EQ(s.accuracy, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(s.load_balance_loss, (4.0 + 2.0) / (2 * 2.0));  // mean over layers, groups
  EXPECT_DOUBLE_EQ(s.router_z_loss, (8.0 + 4.0) / (2 * 8.0));      // mean over layers, tokens
  ASSERT_EQ(s.layers.size(), 2u);
  EXPECT_EQ(s.layers[0].layer, 1);
  EXPECT_DOUBLE_EQ(s.layers[0].load_balance_loss, 2.0);
  EXPECT_DOUBLE_EQ(s.layers[0].router_z_loss, 1.0);
  EXPECT_EQ(s.layers[1].layer, 3);
  EXPECT_DOUBLE_EQ(s.layers[1].load_balance_loss, 1.0);
  EXPECT_DOUBLE_EQ(s.layers[1].router_z_loss, 0.5);
  EXPECT_NEAR(s.objective, 2.0 + 0.1 * 1.0 + 0.01 * 1.5 + 0.001 * 0.75, 1e-15);
}

TEST(LossSummary, ScalesInClosedForm) {
  const LossScales s = MakeLossScales(MadeUpCounts(), kWeights);
  EXPECT_DOUBLE_EQ(s.lm_normalizer, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(s.output_z_weight, 0.1);
  EXPECT_DOUBLE_EQ(s.load_balance_scale, 0.01 / (2 * 2.0));
  EXPECT_DOUBLE_EQ(s.router_z_scale, 0.001 / (2 * 8.0));
}

TEST(LossSummary, EmptyBatchAndDenseModelGiveZeros) {
  DecoderSums sums;
  sums.router.resize(2);
  const LossSummary s = SummarizeLosses(sums, {.tokens = 16, .groups = 1, .moe_layers = {}}, kWeights);
  EXPECT_EQ(s.cross_entropy, 0.0);
  EXPECT_EQ(s.accuracy, 0.0);
  EXPECT_EQ(s.load_balance_loss, 0.0);
  EXPECT_EQ(s.router_z_loss, 0.0);
  EXPECT_EQ(s.objective, 0.0);
  EXPECT_TRUE(s.layers.empty());
  const LossScales scales = MakeLossScales({.tokens = 16, .groups = 1, .moe_layers = {}}, kWeights);
  EXPECT_EQ(scales.lm_normalizer, 0.0);
  EXPECT_EQ(scales.load_balance_scale, 0.0);
}

TEST(LossSummary, CountsForAJob) {
  JobSpec spec;
  spec.mutable_model()->set_num_layers(4);
  spec.mutable_model()->set_num_experts(4);
  spec.mutable_model()->set_moe_interval(2);
  spec.mutable_router()->set_group_size(16);
  spec.mutable_router()->set_aux_loss_weight(0.5);
  spec.mutable_router()->set_z_loss_weight(0.25);
  spec.mutable_loss()->set_output_z_loss_weight(0.125);
  const LossCounts c = LossCountsFor(spec, 40.0, 64);
  EXPECT_EQ(c.target_tokens, 40.0);
  EXPECT_EQ(c.tokens, 64.0);
  EXPECT_EQ(c.groups, 4.0);
  EXPECT_EQ(c.moe_layers, (std::vector<int64_t>{1, 3}));
  const LossWeights w = LossWeightsFor(spec);
  EXPECT_EQ(w.output_z, 0.125);
  EXPECT_EQ(w.load_balance, 0.5);
  EXPECT_EQ(w.router_z, 0.25);
}

// What Forward returns as the loss is the summary's objective of its own sums, to the bit.
TEST(LossSummary, ObjectiveIsTheDecoderLoss) {
  JobSpec spec;
  ModelConfig* m = spec.mutable_model();
  m->set_vocab_size(32);
  m->set_num_layers(4);
  m->set_d_model(16);
  m->set_num_heads(2);
  m->set_head_dim(8);
  m->set_d_ff(16);
  m->set_num_experts(4);
  m->set_moe_interval(2);
  spec.mutable_router()->set_group_size(8);
  spec.mutable_router()->set_aux_loss_weight(0.5);
  spec.mutable_router()->set_z_loss_weight(0.25);
  spec.mutable_loss()->set_output_z_loss_weight(0.125);
  const ModelDims dims = DimsFromSpec(spec);
  const ParamLayout layout(dims);
  std::vector<float> params(layout.total_size());
  InitParams(layout, 3, params.data());
  Batch batch;
  batch.Resize(2, 8);
  for (int64_t i = 0; i < 16; ++i) {
    batch.tokens[i] = static_cast<int32_t>((7 * i + 3) % 32);
    batch.targets[i] = static_cast<int32_t>((5 * i + 1) % 32);
    batch.segment_ids[i] = 1;
    batch.loss_weights[i] = i % 8 == 7 ? 0.0f : 1.0f;
  }
  const LossCounts counts = LossCountsFor(spec, 14.0, 16);
  const LossWeights weights = LossWeightsFor(spec);
  Decoder decoder(layout, RoutingFromSpec(spec, /*eval=*/false));
  const DecoderSums sums = decoder.Forward(params.data(), batch, MakeLossScales(counts, weights));
  const LossSummary s = SummarizeLosses(sums, counts, weights);
  EXPECT_EQ(s.objective, sums.loss);
  // And the weighted terms add up to it (an independent route: the unweighted terms).
  EXPECT_NEAR(s.objective,
              s.cross_entropy + 0.125 * s.output_z_loss + 0.5 * s.load_balance_loss +
                  0.25 * s.router_z_loss,
              1e-12);
  EXPECT_GT(s.load_balance_loss, 0.0);
  EXPECT_GT(s.router_z_loss, 0.0);
}

}  // namespace
}  // namespace openmoe
