// Every router variant on 2 and 4 ranks gives the one-chip, one-process losses and gradients:
// experts split over ranks, and, in turn, each data x expert x model layout of this world.
#include "gtest/gtest.h"
#include "tests/testing/router_variants.h"

namespace openmoe {
namespace {

using testing::ExpectSameAsOneChip;
using testing::OnMesh;

TEST(RouterVariantsMpi, ExpertsSplitOverRanks) {
  auto world = MakeWorldCommunicator();
  for (const testing::RouterVariant& v : testing::RouterVariants()) {
    SCOPED_TRACE(v.name);
    ExpectSameAsOneChip(OnMesh(v.spec, 8, 4, 8), world.get(), v.steps);
  }
}

// BF16: as Bf16LayoutMpi, one-ulp flips of single bf16 elements make the match 1e-3 relative.
TEST(RouterVariantsMpi, Bf16ExpertsSplitOverRanks) {
  auto world = MakeWorldCommunicator();
  for (testing::RouterVariant v : testing::RouterVariants()) {
    SCOPED_TRACE(v.name);
    v.spec.mutable_train()->set_compute_dtype(BF16);
    ExpectSameAsOneChip(OnMesh(v.spec, 8, 4, 8), world.get(), v.steps, /*tolerance=*/1e-3);
  }
}

// The layouts of EveryDataExpertModelLayout, dealt out to the variants in turn (each variant
// meets several; every layout is met), with that variant's router.
TEST(RouterVariantsMpi, EveryLayoutByTurns) {
  auto world = MakeWorldCommunicator();
  const std::vector<testing::RouterVariant> variants = testing::RouterVariants();
  size_t i = 0;
  for (const testing::MeshLayout& layout : testing::EveryDataExpertModelLayout(world->size())) {
    const testing::RouterVariant& v = variants[i++ % variants.size()];
    SCOPED_TRACE(v.name);
    JobSpec spec = layout.spec;
    *spec.mutable_router() = v.spec.router();
    if (!v.microbatch_invariant) spec.mutable_train()->set_microbatches(1);
    ExpectSameAsOneChip(spec, world.get(), v.steps);
  }
}

}  // namespace
}  // namespace openmoe
