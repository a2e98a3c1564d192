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
#include "parallel/cost/hbm_traffic.h"

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
                                 one.activation_bytes + one.runtime_bytes);
  // Two ranks: 2 of the 4 chips each, so half the activations and fewer expert parameters.
  EXPECT_EQ(one.chips_per_rank, 4);
  EXPECT_EQ(two.chips_per_rank, 2);
  EXPECT_DOUBLE_EQ(two.activation_bytes, one.activation_bytes / 2);
  EXPECT_LT(two.params_bytes, one.params_bytes);
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
  // Activations of the piece's sizes for the rank's one shard: 4 rows x 64 = 256 tokens, expert
  // buffer E * C = 4 x 40 rows per 128-token group.
  ModelDims piece = dims;
  piece.num_heads /= 2;
  piece.d_ff /= 2;
  piece.expert_d_ff /= 2;
  piece.padded_vocab_size /= 2;
  // The blocked attention keeps a log-sum-exp per head (H per layer), not the H x S probabilities.
  const double probabilities = static_cast<double>(piece.num_layers * piece.num_heads) * 64;
  const double lse = static_cast<double>(piece.num_layers * piece.num_heads);
  EXPECT_DOUBLE_EQ(e.activation_bytes,
                   2 * 4 *
                       (TrafficPerToken(piece, 64, 160.0 / 128).saved_elements - probabilities +
                        lse) *
                       256);
}

}  // namespace
}  // namespace openmoe
