// One process hosting many chips gives the one-chip result, for every expert-parallel size.
#include "gtest/gtest.h"
#include "tests/testing/layout_check.h"

namespace openmoe {
namespace {

using testing::ExpectSameAsOneChip;
using testing::LayoutJob;
using testing::OnMesh;

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

TEST(LayoutInvariance, OneRankSixtyFourChips) {
  SelfCommunicator self;
  ExpectSameAsOneChip(OnMesh(LayoutJob(16), 64, 8, 16), &self, 2);
}

}  // namespace
}  // namespace openmoe
