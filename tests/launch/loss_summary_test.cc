// The loss terms are computed once (model/loss_summary.h): on a small job, the summary's
// objective is the loss the trainer optimises, and `openmoe score` and the metrics step record
// report the same numbers for the same batch and weights.
#include "model/loss_summary.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "launch/metrics.h"
#include "launch/score.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

using testing::CheckpointJob;
using testing::MakeTrainer;

constexpr int64_t kRows = 8, kSeqLen = 8;

// LayoutJob with two MoE layers (1 and 3), loss weights large enough to show in every digit, and
// the eval capacity factor equal to the training one, so score routes as training does.
JobSpec SmallJob(int64_t microbatches) {
  JobSpec spec = CheckpointJob(4, 1, 1, microbatches);
  spec.mutable_model()->set_num_layers(4);
  spec.mutable_train()->set_batch_rows(kRows);
  spec.mutable_router()->set_eval_capacity_factor(spec.router().capacity_factor());
  spec.mutable_router()->set_aux_loss_weight(0.5);
  spec.mutable_router()->set_z_loss_weight(0.25);
  spec.mutable_loss()->set_output_z_loss_weight(0.125);
  return spec;
}

TokenArray Tokens() {
  TokenArray t;
  t.rows = kRows;
  t.seq_len = kSeqLen;
  for (int64_t i = 0; i < kRows * kSeqLen; ++i) t.tokens.push_back(static_cast<int32_t>((i * 37 + 5) % 64));
  return t;
}

// The causal LM batch `openmoe score` builds of these tokens, written out here.
Batch CausalBatch(const TokenArray& t) {
  Batch b;
  b.Resize(t.rows, t.seq_len);
  for (int64_t row = 0; row < t.rows; ++row) {
    for (int64_t s = 0; s < t.seq_len; ++s) {
      const int64_t i = row * t.seq_len + s;
      b.tokens[i] = t.tokens[i];
      b.segment_ids[i] = 1;
      if (s + 1 < t.seq_len) {
        b.targets[i] = t.tokens[i + 1];
        b.loss_weights[i] = 1.0f;
      }
    }
  }
  return b;
}

// The text of `"key":` value in a JSON record, from `from` on.
std::string Field(const std::string& json, const std::string& key, size_t from = 0) {
  const std::string k = "\"" + key + "\":";
  const size_t at = json.find(k, from);
  if (at == std::string::npos) return "missing " + key;
  const size_t begin = at + k.size();
  return json.substr(begin, json.find_first_of(",}", begin) - begin);
}

TEST(LossSummaryJob, ObjectiveIsTheTrainedLoss) {
  const JobSpec spec = SmallJob(1);
  auto trainer = MakeTrainer(spec);
  trainer->Step();  // away from the initialisation
  const DecoderSums sums = trainer->ComputeGradients(CausalBatch(Tokens()));
  const LossSummary s = SummarizeLosses(sums, LossCountsFor(spec, sums.lm.weight, kRows * kSeqLen),
                                        LossWeightsFor(spec));
  EXPECT_EQ(s.target_tokens, kRows * (kSeqLen - 1));
  EXPECT_EQ(s.objective, sums.loss);  // one microbatch on one rank: the very same sum
  EXPECT_NEAR(s.objective,
              s.cross_entropy + 0.125 * s.output_z_loss + 0.5 * s.load_balance_loss +
                  0.25 * s.router_z_loss,
              1e-12);
  ASSERT_EQ(s.layers.size(), 2u);
  EXPECT_NEAR(s.load_balance_loss,
              (s.layers[0].load_balance_loss + s.layers[1].load_balance_loss) / 2, 1e-12);
  EXPECT_GT(s.load_balance_loss, 0.0);

  // Two microbatches: the trainer's loss is a sum of two calls' shares, the same to rounding.
  const JobSpec two = SmallJob(2);
  auto trainer2 = MakeTrainer(two);
  const DecoderSums sums2 = trainer2->ComputeGradients(CausalBatch(Tokens()));
  const LossSummary s2 = SummarizeLosses(
      sums2, LossCountsFor(two, sums2.lm.weight, kRows * kSeqLen), LossWeightsFor(two));
  EXPECT_NEAR(s2.objective, sums2.loss, 1e-12 * std::fabs(sums2.loss));
}

TEST(LossSummaryJob, ScoreAndMetricsRecordAgree) {
  const JobSpec spec = SmallJob(1);
  auto trainer = MakeTrainer(spec);
  trainer->Step();
  const TokenArray tokens = Tokens();
  StepResult r;
  r.sums = trainer->ComputeGradients(CausalBatch(tokens));
  r.loss = r.sums.loss;
  r.tokens = kRows * kSeqLen;
  const std::string record = StepRecordJson(spec, r, CostBreakdown{}, "test");

  auto score = ScoreTokens(spec, trainer->params().data(), tokens);
  ASSERT_TRUE(score.ok()) << score.status();
  EXPECT_EQ(score->padded_rows, 0);
  EXPECT_EQ(Field(record, "loss"), JsonNumber(score->loss));
  EXPECT_EQ(Field(record, "cross_entropy"), JsonNumber(score->cross_entropy));
  EXPECT_EQ(Field(record, "output_z_loss"), JsonNumber(score->output_z_loss));
  EXPECT_EQ(Field(record, "load_balance_loss"), JsonNumber(score->load_balance_loss));
  EXPECT_EQ(Field(record, "router_z_loss"), JsonNumber(score->router_z_loss));
  EXPECT_EQ(Field(record, "accuracy"), JsonNumber(score->accuracy));
  EXPECT_EQ(Field(record, "target_tokens"), JsonNumber(score->target_tokens));
  ASSERT_EQ(score->layers.size(), 2u);
  size_t at = record.find("\"moe_layers\":[");
  for (const LayerScore& layer : score->layers) {
    at = record.find("{\"layer\":" + std::to_string(layer.layer) + ",", at);
    ASSERT_NE(at, std::string::npos) << layer.layer;
    EXPECT_EQ(Field(record, "load_balance_loss", at), JsonNumber(layer.load_balance_loss));
    EXPECT_EQ(Field(record, "router_z_loss", at), JsonNumber(layer.router_z_loss));
  }
}

}  // namespace
}  // namespace openmoe
