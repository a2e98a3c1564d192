// BF16 on one process hosting many chips gives the one-chip BF16 result. bf16 rounding turns
// fp32 summation-order differences into occasional one-ulp (2^-8) flips of single elements, so
// the match is to 1e-3 relative rather than FP32's 1e-5.
#include "gtest/gtest.h"
#include "tests/testing/layout_check.h"

namespace openmoe {
namespace {

TEST(Bf16Layout, OneRankEightChipsAndMicrobatches) {
  JobSpec spec = testing::LayoutJob(8);
  spec.mutable_train()->set_compute_dtype(BF16);
  SelfCommunicator self;
  testing::ExpectSameAsOneChip(testing::OnMesh(spec, 8, 4, 4, /*microbatches=*/2), &self,
                               /*steps=*/3, /*tolerance=*/1e-3);
}

TEST(Bf16Layout, SharedExpertsOnTheExpertAndModelAxes) {
  JobSpec spec = testing::WithSharedExperts(testing::LayoutJob(8), 2, 16);
  spec.mutable_train()->set_compute_dtype(BF16);
  SelfCommunicator self;
  testing::ExpectSameAsOneChip(
      testing::WithModelParallel(testing::OnMesh(spec, 8, 4, 2, /*microbatches=*/2), 2), &self,
      /*steps=*/3, /*tolerance=*/1e-3);
}

}  // namespace
}  // namespace openmoe
