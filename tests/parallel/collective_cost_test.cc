#include "parallel/cost/collective_cost.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/torus_groups.h"

namespace openmoe {
namespace {

constexpr double kW = 1e11;  // bytes/s per link per direction
constexpr double kH = 1e-6;  // s per hop
constexpr double kB = 1e9;   // bytes per chip
const LinkParams kLink{kW, kH};

using testing::Group;
using testing::Replicas;
using testing::SliceMesh;

TEST(RingAllReduce, RingOfEightUsesBothDirections) {
  // 2 (n-1)/n B / (2W) + 2 (n-1) h.
  EXPECT_DOUBLE_EQ(RingAllReduceSeconds(Group(8, 8, 8), 0, kB, kLink),
                   2.0 * 7 / 8 * kB / (2 * kW) + 14 * kH);
}

TEST(RingAllReduce, LineOfFourHasOneDirectionPerRing) {
  EXPECT_DOUBLE_EQ(RingAllReduceSeconds(Group(8, 8, 4), 0, kB, kLink),
                   2.0 * 3 / 4 * kB / kW + 6 * kH);
}

TEST(RingAllReduce, StridedReplicasShareTheirLinks) {
  // ep = 16 on 8x8: replicas every other row of one column (4 chips, stride 2, ring): the two
  // interleaved replica sets of a column share its links, each hop of the ring is 2 links.
  EXPECT_DOUBLE_EQ(RingAllReduceSeconds(Replicas(8, 8, 16), 1, kB, kLink),
                   2.0 * 3 / 4 * kB / (2 * kW / 2) + 2 * 3 * 2 * kH);
  EXPECT_DOUBLE_EQ(RingAllReduceSeconds(Replicas(8, 8, 16), 0, kB, kLink), 0);
}

TEST(AllReduce, BothDimensionsAtOnceKeepFourLinksBusy) {
  // 16x16 torus, both rings (r = 2): c_x = c_y = 2 (15/16) B / 2W. Half of B goes x first, half y
  // first; each dimension carries B/2 whole plus (B/2)/16: T = c (1/2 + 1/32) + 2 * 30 h.
  // By hand: 2 * 15/16 * 1e9 / 2e11 = 9.375e-3 s; * 17/32 = 4.98046875e-3 s; + 60e-6 s.
  EXPECT_DOUBLE_EQ(AllReduceSeconds(Group(16, 16, 256), kB, kLink), 4.98046875e-3 + 60e-6);
  // Half the dimension-after-dimension time: T_x(B) + T_y(B/16) = 9.375e-3 * 17/16 + 60 h.
  EXPECT_LT(AllReduceSeconds(Group(16, 16, 256), kB, kLink), 0.51 * 9.375e-3 * 17 / 16 + 60 * kH);
}

TEST(AllReduce, BalancesUnequalDimensions) {
  // Replicas of ep = 4 on 8x8: x has 2 chips 4 hops apart (ring links 2/4), y a full column ring
  // (2). c_x = 2 (1/2) B / (0.5 W) = 2 B/W = 0.02 s, c_y = 2 (7/8) B / 2W = 0.875 B/W = 8.75e-3 s.
  // The loads balance at x = (c_y - c_x/8) / (c_x (7/8) + c_y (1/2)) = 2/7:
  //   c_x (2/7 + (5/7)/8) = 0.02 * 21/56 = 7.5e-3 s = c_y (5/7 + 1/7) = 8.75e-3 * 6/7.
  // Latency 2 * 1 * 4 h + 2 * 7 * 1 h = 22 h.
  EXPECT_NEAR(AllReduceSeconds(Replicas(8, 8, 4), kB, kLink), 7.5e-3 + 22 * kH, 1e-15);
}

TEST(AllReduce, OneDimensionIsOneRing) {
  EXPECT_DOUBLE_EQ(AllReduceSeconds(Group(8, 8, 8), kB, kLink),
                   RingAllReduceSeconds(Group(8, 8, 8), 0, kB, kLink));
}

// Footprint of model group 0 of an 8x8 slice with model_parallel mp (consecutive chips in x).
Footprint ModelGroup(int64_t mp) {
  Mesh m = SliceMesh(8, 8, 1);
  m.model_parallel = mp;
  return FootprintOf(TorusOf(m, true), ModelGroupChips(m, 0));
}

TEST(ModelAxisAllReduce, HalfRowLineAndFullRowRing) {
  // mp 4: a line of 4 (one ring link per direction pair): 2 (3/4) B / W + 2 * 3 h.
  EXPECT_DOUBLE_EQ(AllReduceSeconds(ModelGroup(4), kB, kLink), 2.0 * 3 / 4 * kB / kW + 6 * kH);
  // mp 8: the row's ring, both directions: 2 (7/8) B / 2W + 2 * 7 h.
  EXPECT_DOUBLE_EQ(AllReduceSeconds(ModelGroup(8), kB, kLink),
                   2.0 * 7 / 8 * kB / (2 * kW) + 14 * kH);
  // mp 16: two rows, both dimensions at once: c_x = 2 (7/8) B / 2W = 0.875 B/W (ring of 8),
  // c_y = 2 (1/2) B / W = B/W (line of 2). Balanced at x = (1 - 0.875/2) / (0.875/2 + 7/8) = 3/7:
  // c_y (4/7 + 3/56) = 35/56 B/W = 0.625 B/W (= c_x (3/7 + 2/7)); latency 14 h + 2 h.
  EXPECT_NEAR(AllReduceSeconds(ModelGroup(16), kB, kLink), 0.625 * kB / kW + 16 * kH, 1e-15);
}

TEST(AllReduce, SingleChipIsFree) { EXPECT_EQ(AllReduceSeconds(Replicas(8, 8, 64), kB, kLink), 0); }

TEST(AllToAll, RowRingOfEightIsBoundedByItsTwoCutLinks) {
  // n B / 4 / (2 W) + diameter 4 hops.
  EXPECT_DOUBLE_EQ(AllToAllSeconds(Group(8, 8, 8), kB, kLink), 8 * kB / 4 / (2 * kW) + 4 * kH);
}

TEST(AllToAll, TwoRowsOfEight) {
  // Bisection 4 links (2 per row): 16 B / 4 / 4W = B / W; diameter 4 + 1.
  EXPECT_DOUBLE_EQ(AllToAllSeconds(Group(8, 8, 16), kB, kLink), kB / kW + 5 * kH);
}

TEST(AllToAll, HalfRowLine) {
  // 4 chips in a line: bisection 1 link: 4 B / 4 / W; injection (3/4) B / W is smaller.
  EXPECT_DOUBLE_EQ(AllToAllSeconds(Group(8, 8, 4), kB, kLink), kB / kW + 3 * kH);
}

TEST(AllToAll, PairIsBoundedByItsOneLink) {
  // Each chip sends the other half its buffer over the one link between them.
  EXPECT_DOUBLE_EQ(AllToAllSeconds(Group(8, 8, 2), kB, kLink), kB / 2 / kW + kH);
}

TEST(AllToAll, WholeToriOfEveryV3SliceSize) {
  // Bisections: 8x8 16 links, 8x16 16, 16x16 32, 16x32 32.
  EXPECT_DOUBLE_EQ(AllToAllSeconds(Group(8, 8, 64), kB, kLink), 64 * kB / 4 / (16 * kW) + 8 * kH);
  EXPECT_DOUBLE_EQ(AllToAllSeconds(Group(8, 16, 128), kB, kLink),
                   128 * kB / 4 / (16 * kW) + 12 * kH);
  EXPECT_DOUBLE_EQ(AllToAllSeconds(Group(16, 16, 256), kB, kLink),
                   256 * kB / 4 / (32 * kW) + 16 * kH);
  EXPECT_DOUBLE_EQ(AllToAllSeconds(Group(16, 32, 512), kB, kLink),
                   512 * kB / 4 / (32 * kW) + 24 * kH);
}

TEST(AllToAll, WithoutWraparoundTheBisectionHalves) {
  const double with = AllToAllSeconds(Group(8, 8, 64, true), kB, LinkParams{kW, 0});
  const double without = AllToAllSeconds(Group(8, 8, 64, false), kB, LinkParams{kW, 0});
  EXPECT_DOUBLE_EQ(without, 2 * with);
}

TEST(Scaling, FixedBytesPerChipAllToAllOverTheSliceGrowsWithItsBisection) {
  // Chips N, torus, all-to-all over every chip: time = N B / 4 / (bisection W), which grows
  // like sqrt(N) on square tori (and never falls as chips are added).
  struct Slice {
    int64_t x, y;
  };
  const std::vector<Slice> slices = {{8, 8}, {8, 16}, {16, 16}, {16, 32}};
  const LinkParams no_latency{kW, 0};
  double previous = 0;
  for (const Slice& s : slices) {
    const Footprint f = Group(s.x, s.y, s.x * s.y);
    const double t = AllToAllSeconds(f, kB, no_latency);
    EXPECT_DOUBLE_EQ(t, static_cast<double>(s.x * s.y) * kB / 4 / (f.BisectionLinks() * kW));
    EXPECT_GE(t, previous) << s.x << "x" << s.y;
    previous = t;
  }
  // 64 -> 256 chips (both square): 4x the chips, 2x the time.
  EXPECT_DOUBLE_EQ(AllToAllSeconds(Group(16, 16, 256), kB, no_latency),
                   2 * AllToAllSeconds(Group(8, 8, 64), kB, no_latency));
}

TEST(Scaling, FixedBytesPerChipAllReduceIsNearlyFlat) {
  // B / W (1 + 1 / n_first) (n-1)/n ...: between 64 and 512 chips it changes by < 10%.
  const LinkParams no_latency{kW, 0};
  const double t64 = AllReduceSeconds(Group(8, 8, 64), kB, no_latency);
  const double t512 = AllReduceSeconds(Group(16, 32, 512), kB, no_latency);
  EXPECT_NEAR(t512 / t64, 1.0, 0.1);
  EXPECT_GT(t512, t64);
}

}  // namespace
}  // namespace openmoe
