// One process hosting many chips gives the one-chip result, for every expert-parallel size.
#include "gtest/gtest.h"
#include "tests/testing/layout_check.h"

namespace openmoe {
namespace {

using testing::ExpectSameAsOneChip;
using testing::LayoutJob;
using testing::OnMesh;
using testing::WithModelParallel;

TEST(LayoutInvariance, OneRankEightChipsAnyExpertParallelism) {
  SelfCommunicator self;
  for (int64_t ep : {1, 2, 4, 8}) ExpectSameAsOneChip(OnMesh(LayoutJob(8), 8, 4, ep), &self);
}

TEST(LayoutInvariance, OneRankSixteenExpertsOnEightChips) {
  SelfCommunicator self;
  ExpectSameAsOneChip(OnMesh(LayoutJob(16), 8, 4, 8), &self);
}

TEST(LayoutInvariance, MicrobatchesOnAMesh) {
  SelfCommunicator self;
  ExpectSameAsOneChip(OnMesh(LayoutJob(8), 8, 4, 4, /*microbatches=*/2), &self);
}

// One rank hosting whole model groups holds whole weights: any model axis gives the one-chip
// result (the data shards are model groups of chips, whatever ep).
TEST(LayoutInvariance, OneRankAnyModelParallelism) {
  SelfCommunicator self;
  for (int64_t mp : {2, 4})
    for (int64_t ep : {1, 2})
      ExpectSameAsOneChip(WithModelParallel(OnMesh(LayoutJob(8), 8, 4, ep, 2), mp), &self);
}

// Shared experts (2 of hidden 16, fine-grained: half of d_ff) on the expert axis (replicated
// there) and on the model axis (split on mlp, their output and input gradient all-reduced), with
// microbatches: the one-chip losses and gradients.
TEST(LayoutInvariance, SharedExpertsOnTheExpertAndModelAxes) {
  const JobSpec job = testing::WithSharedExperts(LayoutJob(8), 2, 16);
  SelfCommunicator self;
  for (int64_t ep : {1, 4, 8}) ExpectSameAsOneChip(OnMesh(job, 8, 4, ep), &self);
  for (int64_t mp : {2, 4})
    ExpectSameAsOneChip(WithModelParallel(OnMesh(job, 8, 4, 2, 2), mp), &self);
}

TEST(LayoutInvariance, OneRankSixtyFourChips) {
  SelfCommunicator self;
  ExpectSameAsOneChip(OnMesh(LayoutJob(16), 64, 8, 16), &self, 2);
}

// AdamW with router jitter and microbatches: the noise is keyed by global row, step and layer, so
// 8 chips (ep 4, 2 microbatches) match one chip; and the jitter does act (the loss moves).
TEST(LayoutInvariance, AdamWWithRouterJitter) {
  JobSpec spec = LayoutJob(8);
  spec.mutable_train()->set_optimizer(OPTIMIZER_ADAMW);
  spec.mutable_schedule()->set_kind(SCHEDULE_WARMUP_COSINE);
  spec.mutable_schedule()->set_peak_learning_rate(1e-2);
  spec.mutable_schedule()->set_warmup_steps(2);
  spec.mutable_router()->set_jitter_noise(0.1);
  SelfCommunicator self;
  ExpectSameAsOneChip(OnMesh(spec, 8, 4, 4, /*microbatches=*/2), &self, 3);

  JobSpec plain = spec;
  plain.mutable_router()->set_jitter_noise(0);
  const double jittered = Trainer::Create(spec).value()->Step().loss;
  const double unjittered = Trainer::Create(plain).value()->Step().loss;
  EXPECT_NE(jittered, unjittered);
}

}  // namespace
}  // namespace openmoe
