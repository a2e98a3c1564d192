// CheckRankMemory: the estimate's parts add up, the parameters are the rank's layout in fp32,
// and the verdict flips at the estimate.
#include "launch/memory_check.h"

#include <cmath>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "model/config.h"
#include "model/params.h"
#include "model/activation_memory.h"

namespace openmoe {
namespace {

JobSpec Tiny() {
  auto spec = LoadJob({std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt"}, {});
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *spec;
}

TEST(MemoryCheck, ParamsAreTheRankLayoutAndPartsAddUp) {
  const JobSpec spec = Tiny();
  RankMemoryEstimate one, two;
  ASSERT_TRUE(EstimateRankMemory(spec, 1, 0, &one).ok());
  ASSERT_TRUE(EstimateRankMemory(spec, 2, 0, &two).ok());
  // One rank holds all 4 experts: the whole layout.
  EXPECT_EQ(one.params_bytes, 4.0 * ParamLayout(DimsFromSpec(spec)).total_size());
  EXPECT_EQ(one.grads_bytes, one.params_bytes);
  EXPECT_EQ(one.total_bytes, one.params_bytes + one.grads_bytes + one.optimizer_bytes +
                                 one.activation_bytes + one.scratch_bytes +
                                 one.communication_bytes + one.runtime_bytes);
  // Two ranks: 2 of the 4 chips each, so half the activations and fewer expert parameters.
  EXPECT_EQ(one.chips_per_rank, 4);
  EXPECT_EQ(two.chips_per_rank, 2);
  EXPECT_NEAR(two.activation_bytes, one.activation_bytes / 2, 1e-9 * one.activation_bytes);
  // One rank keeps its experts' rows in place; two exchange them.
  EXPECT_EQ(one.communication_bytes, 0);
  EXPECT_GT(two.communication_bytes, 0);
  EXPECT_LT(two.params_bytes, one.params_bytes);
}

// BF16 keeps attention's q, k, v, context and the MoE's dispatched rows at 2 bytes instead of 4;
// tiny on one rank: 4 layers x 4 x 512 tokens x 64 (heads x head_dim), and 2 MoE layers x 640
// kept rows at most (4 groups of 128 tokens, each 4 experts x a capacity of 1.25 x 128 / 4 = 40,
// below its 2 x 128 choices) x d_model 64.
// Parameters and optimizer state stay fp32; the runtime allowance grows by oneDNN's copies.
TEST(MemoryCheck, Bf16CountsItsBf16ActivationsAtTwoBytes) {
  JobSpec fp32 = Tiny(), bf16 = Tiny();
  fp32.mutable_train()->set_compute_dtype(FP32);
  bf16.mutable_train()->set_compute_dtype(BF16);
  RankMemoryEstimate e32, e16;
  ASSERT_TRUE(EstimateRankMemory(fp32, 1, 0, &e32).ok());
  ASSERT_TRUE(EstimateRankMemory(bf16, 1, 0, &e16).ok());
  EXPECT_EQ(e16.params_bytes, e32.params_bytes);
  EXPECT_EQ(e16.grads_bytes, e32.grads_bytes);
  EXPECT_EQ(e16.optimizer_bytes, e32.optimizer_bytes);
  EXPECT_DOUBLE_EQ(e32.activation_bytes - e16.activation_bytes,
                   2.0 * (4 * 4 * 512 * 64 + 2 * 640 * 64));
  EXPECT_EQ(e32.runtime_bytes, 40.0 * 1024 * 1024);
  EXPECT_EQ(e16.runtime_bytes, 48.0 * 1024 * 1024);
}

TEST(MemoryCheck, FailsWithOneLineJustBelowTheEstimate) {
  const JobSpec spec = Tiny();
  RankMemoryEstimate e;
  ASSERT_TRUE(EstimateRankMemory(spec, 1, 0, &e).ok());
  const int64_t need = static_cast<int64_t>(std::ceil(e.total_bytes));
  EXPECT_TRUE(CheckRankMemory(spec, 1, 0, need, "tiny").ok());
  const absl::Status short_of = CheckRankMemory(spec, 1, 0, need - 1, "tiny");
  ASSERT_EQ(short_of.code(), absl::StatusCode::kResourceExhausted);
  const std::string message(short_of.message());
  EXPECT_TRUE(absl::StartsWith(message, "job (tiny): needs ~")) << message;
  EXPECT_TRUE(absl::StrContains(message, "GiB per rank")) << message;
  EXPECT_TRUE(absl::StrContains(message, "or use more ranks")) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos);
  // A mesh that does not fit the world (3 ranks for 4 chips) is left to Trainer::Create.
  EXPECT_TRUE(CheckRankMemory(spec, 3, 0, 1, "tiny").ok());
}

TEST(MemoryCheck, ARankOfASplitModelGroupHoldsItsPiece) {
  // tiny at model_parallel 2, expert_parallel 2 on 4 ranks: each model group (one data shard of
  // 4 rows) spans 2 ranks; rank 0 holds piece 0 of 2 and experts 0 and 1.
  JobSpec spec = Tiny();
  spec.mutable_mesh()->set_expert_parallel(2);
  spec.mutable_mesh()->set_model_parallel(2);
  ASSERT_TRUE(ValidateJob(spec).ok()) << ValidateJob(spec);
  RankMemoryEstimate e;
  ASSERT_TRUE(EstimateRankMemory(spec, 4, 0, &e).ok());
  const ModelDims dims = DimsFromSpec(spec);
  // A naive count of the piece (every tensor a multiple of 16 floats: no alignment padding):
  // heads, mlp and vocabulary halved, norm scales and router whole, 2 of the 4 experts.
  const double d = 64, a = 64 / 2, f = 128 / 2, fe = dims.expert_d_ff / 2.0, v = 512 / 2;
  const double attention = d + 4 * d * a;
  const double ffn = d + d * 2 * f + d * f + f * d;
  const double moe = d + d * 4 + 2 * (d * 2 * fe + d * fe + fe * d);
  const double params = v * d + 4 * attention + 2 * moe + 4 * ffn + d + d * v;
  EXPECT_DOUBLE_EQ(e.params_bytes, 4 * params);
  // Activations of the piece's sizes for the rank's one shard: 4 rows x 64 = 256 tokens in 2
  // routing groups of 128, each keeping at most min(E * C, k * 128) = min(4 x 40, 256) rows, and
  // an expert at most C = 40 rows a group; rows cross ranks (1 chip per rank, expert_parallel 2).
  ModelDims piece = dims;
  piece.num_heads /= 2;
  piece.d_ff /= 2;
  piece.expert_d_ff /= 2;
  piece.padded_vocab_size /= 2;
  const ActivationEstimate act = EstimateActivations(
      piece, {.rows = 4, .seq_len = 64, .kept_rows = 320, .received_rows = 320,
              .max_block_rows = 80, .experts_remote = true});
  EXPECT_DOUBLE_EQ(e.activation_bytes, act.residual + act.attention + act.ffn + act.moe);
  EXPECT_DOUBLE_EQ(e.scratch_bytes, act.scratch);
  EXPECT_DOUBLE_EQ(e.communication_bytes, act.exchange);
}

TEST(MemoryCheck, SharedExpertsAreInTheRanksPieceAndItsActivations) {
  // The split model group above, with 2 shared experts of 128 (tiny's d_ff) per MoE layer: the
  // rank holds half of their 256 hidden units in each of the 2 MoE layers, and keeps their
  // up-projections (OpenMoE form: 2 x 128 + 128 per token) for its 256 tokens.
  JobSpec spec = Tiny();
  spec.mutable_mesh()->set_expert_parallel(2);
  spec.mutable_mesh()->set_model_parallel(2);
  JobSpec shared = spec;
  shared.mutable_model()->set_num_shared_experts(2);
  ASSERT_TRUE(ValidateJob(shared).ok()) << ValidateJob(shared);
  RankMemoryEstimate without, with;
  ASSERT_TRUE(EstimateRankMemory(spec, 4, 0, &without).ok());
  ASSERT_TRUE(EstimateRankMemory(shared, 4, 0, &with).ok());
  const double d = 64, fs = 2 * 128 / 2;
  EXPECT_DOUBLE_EQ(with.params_bytes - without.params_bytes,
                   4 * 2 * (d * 2 * fs + d * fs + fs * d));
  EXPECT_DOUBLE_EQ(with.activation_bytes - without.activation_bytes, 4 * 2 * 256 * (2 * fs + fs));
}

}  // namespace
}  // namespace openmoe
