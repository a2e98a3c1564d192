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

}  // namespace
}  // namespace openmoe
