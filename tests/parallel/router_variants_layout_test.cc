// Every router variant on one process hosting 8 chips (expert and model axes, microbatches)
// gives the one-chip losses and gradients.
#include "gtest/gtest.h"
#include "tests/testing/router_variants.h"

namespace openmoe {
namespace {

using testing::ExpectSameAsOneChip;
using testing::OnMesh;
using testing::WithModelParallel;

TEST(RouterVariantsLayout, OneRankExpertAndModelAxes) {
  SelfCommunicator self;
  for (const testing::RouterVariant& v : testing::RouterVariants()) {
    SCOPED_TRACE(v.name);
    ExpectSameAsOneChip(OnMesh(v.spec, 8, 4, 4), &self, v.steps);
    ExpectSameAsOneChip(WithModelParallel(OnMesh(v.spec, 8, 4, 2), 2), &self, v.steps);
    if (v.microbatch_invariant) ExpectSameAsOneChip(OnMesh(v.spec, 8, 4, 8, 2), &self, v.steps);
  }
}

}  // namespace
}  // namespace openmoe
