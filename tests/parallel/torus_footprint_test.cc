#include "parallel/cost/torus_footprint.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/torus_groups.h"

namespace openmoe {
namespace {

using testing::Group;
using testing::Replicas;
using testing::SliceMesh;

void ExpectDim(const FootprintDim& d, int64_t size, int64_t stride, bool ring) {
  EXPECT_EQ(d.size, size);
  EXPECT_EQ(d.stride, stride);
  EXPECT_EQ(d.ring, ring);
}

TEST(TorusFootprint, ExpertGroupOfEightOnAnEightByEightTorusIsOneRowRing) {
  const Footprint f = Group(8, 8, 8);
  ExpectDim(f.dim[0], 8, 1, true);
  ExpectDim(f.dim[1], 1, 1, false);
  EXPECT_TRUE(f.exact);
  EXPECT_EQ(f.Describe(), "8x1 (x ring)");
  EXPECT_DOUBLE_EQ(f.BisectionLinks(), 2);  // a ring is cut twice
  EXPECT_EQ(f.DiameterHops(), 4);
}

TEST(TorusFootprint, ExpertGroupOfSixteenIsTwoRowsWithALineBetweenThem) {
  const Footprint f = Group(8, 8, 16);
  ExpectDim(f.dim[0], 8, 1, true);
  ExpectDim(f.dim[1], 2, 1, false);  // 2 of 8 rows: no wraparound inside the group
  EXPECT_EQ(f.Describe(), "8x2 (x ring, y line)");
  // Cutting the rows in half crosses 2 links per row (4); cutting between the rows crosses 8.
  EXPECT_DOUBLE_EQ(f.BisectionLinks(), 4);
  EXPECT_EQ(f.DiameterHops(), 4 + 1);
}

TEST(TorusFootprint, ExpertGroupSmallerThanARowIsALine) {
  const Footprint f = Group(8, 8, 4);
  ExpectDim(f.dim[0], 4, 1, false);
  EXPECT_DOUBLE_EQ(f.BisectionLinks(), 1);
  EXPECT_DOUBLE_EQ(f.InjectionLinks(), 1);
  EXPECT_EQ(f.DiameterHops(), 3);
}

TEST(TorusFootprint, WholeSliceIsBothRings) {
  const Footprint f = Group(16, 32, 512);
  ExpectDim(f.dim[0], 16, 1, true);
  ExpectDim(f.dim[1], 32, 1, true);
  // Halving the 32-long dimension crosses 16 columns x 2 links; halving the 16-long one 64.
  EXPECT_DOUBLE_EQ(f.BisectionLinks(), 32);
  EXPECT_EQ(f.DiameterHops(), 8 + 16);
}

TEST(TorusFootprint, ExpertGroupOf32OnSixteenWideRowsIsAThinStrip) {
  const Footprint f = Group(16, 16, 32);
  ExpectDim(f.dim[0], 16, 1, true);
  ExpectDim(f.dim[1], 2, 1, false);
  EXPECT_DOUBLE_EQ(f.BisectionLinks(), 4);
  // The same 32 chips on an 8x8 torus are a 8x4 block with twice the bisection.
  EXPECT_DOUBLE_EQ(Group(8, 8, 32).BisectionLinks(), 8);
}

TEST(TorusFootprint, WithoutWraparoundRingsBecomeLines) {
  const Footprint f = Group(8, 8, 64, /*wraparound=*/false);
  ExpectDim(f.dim[0], 8, 1, false);
  ExpectDim(f.dim[1], 8, 1, false);
  EXPECT_DOUBLE_EQ(f.BisectionLinks(), 8);
  EXPECT_EQ(f.DiameterHops(), 14);
}

TEST(TorusFootprint, ReplicasOfAnExpertFormAStridedLattice) {
  // ep = 4 on 8x8: chips j + 4g sit at x = j, j + 4 of every row: 2 per row, 4 hops apart, the
  // pair closing through the wraparound; every row.
  Footprint f = Replicas(8, 8, 4, /*slot=*/1);
  ExpectDim(f.dim[0], 2, 4, true);
  ExpectDim(f.dim[1], 8, 1, true);
  EXPECT_TRUE(f.exact);
  EXPECT_EQ(f.Describe(), "2x8 (x ring stride 4, y ring)");
  EXPECT_DOUBLE_EQ(f.RingLinks(0), 0.5);  // 4 interleaved replica sets share each row's links
  EXPECT_DOUBLE_EQ(f.RingLinks(1), 2);
  // ep = 8: one column, the whole ring.
  f = Replicas(8, 8, 8, 3);
  ExpectDim(f.dim[0], 1, 1, false);
  ExpectDim(f.dim[1], 8, 1, true);
  // ep = 16: every other row of one column.
  f = Replicas(8, 8, 16, 5);
  ExpectDim(f.dim[1], 4, 2, true);
  EXPECT_EQ(f.Describe(), "1x4 (y ring stride 2)");
  EXPECT_EQ(f.DiameterHops(), 4);
  // ep = num_chips: one chip, nothing to reduce.
  EXPECT_EQ(Replicas(8, 8, 64).Chips(), 1);
  EXPECT_DOUBLE_EQ(Replicas(8, 8, 64).BisectionLinks(), 0);
}

TEST(TorusFootprint, IrregularGroupIsApproximatedByItsBoundingLattice) {
  // 12 chips on 8-wide rows: a full row and half of the next.
  const Footprint f = Group(8, 8, 12);
  EXPECT_FALSE(f.exact);
  ExpectDim(f.dim[0], 8, 1, true);
  ExpectDim(f.dim[1], 2, 1, false);
  EXPECT_NE(f.Describe().find("approximate"), std::string::npos);
}

// The model axis is innermost (parallel/mesh.h): chip c = (data * ep + expert) * mp + model.
Mesh WithModelAxis(int64_t x, int64_t y, int64_t ep, int64_t mp) {
  Mesh m = SliceMesh(x, y, ep);
  m.model_parallel = mp;
  return m;
}

TEST(TorusFootprint, ModelGroupsAreConsecutiveChipsInX) {
  const Mesh m = WithModelAxis(8, 8, 1, 4);
  EXPECT_EQ(ModelGroupChips(m, 3), (std::vector<int64_t>{12, 13, 14, 15}));
  const TorusShape t = TorusOf(m, true);
  EXPECT_EQ(FootprintOf(t, ModelGroupChips(m, 0)).Describe(), "4x1 (x line)");
  EXPECT_EQ(FootprintOf(t, ModelGroupChips(WithModelAxis(8, 8, 1, 8), 0)).Describe(),
            "8x1 (x ring)");
  EXPECT_EQ(FootprintOf(t, ModelGroupChips(WithModelAxis(8, 8, 1, 16), 1)).Describe(),
            "8x2 (x ring, y line)");
}

TEST(TorusFootprint, ModelPeersAndExpertGroupsStrideOverTheModelAxis) {
  // ep 4, mp 2 on 8x8: chip (s, m) = 2 s + m.
  const Mesh m = WithModelAxis(8, 8, 4, 2);
  const TorusShape t = TorusOf(m, true);
  const std::vector<int64_t> peers = ModelPeerChips(m, 1);
  ASSERT_EQ(peers.size(), 32u);
  for (size_t i = 0; i < peers.size(); ++i) EXPECT_EQ(peers[i], 2 * static_cast<int64_t>(i) + 1);
  EXPECT_EQ(FootprintOf(t, peers).Describe(), "4x8 (x ring stride 2, y ring)");
  // Expert group 1 at model coord 0: shards 4..7, chips 8, 10, 12, 14 (the second half-row).
  EXPECT_EQ(ExpertGroupChips(m, 1), (std::vector<int64_t>{8, 10, 12, 14}));
  EXPECT_EQ(FootprintOf(t, ExpertGroupChips(m, 0)).Describe(), "4x1 (x ring stride 2)");
  // Replicas of expert slot 1 at model coord 0: shards 1, 5, 9, ... -> chips 2, 10, 18, ...
  const std::vector<int64_t> replicas = ExpertReplicaChips(m, 1);
  ASSERT_EQ(replicas.size(), 8u);
  for (size_t g = 0; g < replicas.size(); ++g) {
    EXPECT_EQ(replicas[g], (1 + 4 * static_cast<int64_t>(g)) * 2);
  }
  EXPECT_EQ(FootprintOf(t, replicas).Describe(), "1x8 (y ring)");
  // model_parallel 1: the peers of coord 0 are every chip.
  EXPECT_EQ(ModelPeerChips(SliceMesh(8, 8, 4), 0), AllChips(SliceMesh(8, 8, 4)));
}

TEST(TorusFootprint, SpecWithoutATorusShapeIsOneRow) {
  Mesh m;
  m.num_chips = 1;
  m.torus_x = 0;
  m.torus_y = 0;
  const TorusShape t = TorusOf(m, true);
  EXPECT_EQ(t.x, 1);
  EXPECT_EQ(t.y, 1);
  EXPECT_EQ(FootprintOf(t, AllChips(m)).Describe(), "1 chip");
}

}  // namespace
}  // namespace openmoe
