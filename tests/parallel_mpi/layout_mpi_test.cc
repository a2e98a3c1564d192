// The same job on several ranks gives the one-chip, one-process losses and gradients.
#include "gtest/gtest.h"
#include "tests/testing/layout_check.h"

namespace openmoe {
namespace {

using testing::ExpectSameAsOneChip;
using testing::LayoutJob;
using testing::OnMesh;

TEST(LayoutInvarianceMpi, EightChipsEveryExpertParallelSize) {
  auto world = MakeWorldCommunicator();
  for (int64_t ep : {1, 2, 4, 8}) ExpectSameAsOneChip(OnMesh(LayoutJob(8), 8, 4, ep), world.get());
}

TEST(LayoutInvarianceMpi, SixteenExperts) {
  auto world = MakeWorldCommunicator();
  ExpectSameAsOneChip(OnMesh(LayoutJob(16), 8, 4, 8), world.get());
}

TEST(LayoutInvarianceMpi, SixtyFourChips) {
  auto world = MakeWorldCommunicator();
  ExpectSameAsOneChip(OnMesh(LayoutJob(16), 64, 8, 8), world.get());
}

TEST(LayoutInvarianceMpi, MicrobatchesAcrossRanks) {
  auto world = MakeWorldCommunicator();
  ExpectSameAsOneChip(OnMesh(LayoutJob(8), 8, 4, 8, /*microbatches=*/2), world.get());
}

// Every valid data x expert x model layout of 2, 4, 8 and 16 chips on this world (under CTest: 2 and 4
// ranks, so model groups sit on one rank, or span 2 or 4 ranks), with drops (capacity factor 1),
// against one chip in one process; microbatches on every other layout.
TEST(LayoutInvarianceMpi, EveryDataExpertModelLayout) {
  auto world = MakeWorldCommunicator();
  const int ranks = world->size();
  int layouts = 0, spanning = 0;
  for (const testing::MeshLayout& layout : testing::EveryDataExpertModelLayout(ranks)) {
    ExpectSameAsOneChip(layout.spec, world.get());
    ++layouts;
    spanning += layout.model_group_spans_ranks ? 1 : 0;
  }
  EXPECT_GE(layouts, 10);
  EXPECT_GE(spanning, ranks >= 4 ? 3 : 2);  // model groups spread over ranks, not only whole
}

// The same with 2 shared experts of hidden 16 in every MoE layer: replicated over the expert
// axis, split on mlp over the model axis (groups on one rank and spanning ranks).
TEST(LayoutInvarianceMpi, SharedExpertsEveryDataExpertModelLayout) {
  auto world = MakeWorldCommunicator();
  const int ranks = world->size();
  const JobSpec job = testing::WithSharedExperts(LayoutJob(8), 2, 16);
  int layouts = 0, spanning = 0;
  for (const testing::MeshLayout& layout : testing::EveryDataExpertModelLayout(ranks, job)) {
    ExpectSameAsOneChip(layout.spec, world.get(), /*steps=*/3);
    ++layouts;
    spanning += layout.model_group_spans_ranks ? 1 : 0;
  }
  EXPECT_GE(layouts, 10);
  EXPECT_GE(spanning, ranks >= 4 ? 3 : 2);
}

}  // namespace
}  // namespace openmoe
