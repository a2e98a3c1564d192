#include "parallel/mesh.h"

#include "gtest/gtest.h"

namespace openmoe {
namespace {

JobSpec Job(int64_t chips, int64_t ep, int64_t experts) {
  JobSpec spec;
  spec.mutable_topology()->set_num_chips(chips);
  spec.mutable_mesh()->set_expert_parallel(ep);
  spec.mutable_model()->set_num_experts(experts);
  return spec;
}

TEST(Mesh, RanksHoldTheUnionOfTheirChipsExperts) {
  // 16 chips, expert groups of 8 chips, 32 experts: 4 per chip. 4 ranks x 4 chips.
  for (int rank = 0; rank < 4; ++rank) {
    const Mesh m = MakeMesh(Job(16, 8, 32), 4, rank).value();
    EXPECT_EQ(m.chips_per_rank, 4);
    EXPECT_EQ(m.num_local_experts, 16);
    EXPECT_EQ(m.first_local_expert, rank % 2 == 0 ? 0 : 16) << rank;
  }
  // 2 ranks x 8 chips: each rank is a whole expert group, so it holds every expert.
  const Mesh whole = MakeMesh(Job(16, 8, 32), 2, 1).value();
  EXPECT_EQ(whole.first_local_expert, 0);
  EXPECT_EQ(whole.num_local_experts, 32);
}

TEST(Mesh, TokensGoToTheirExpertGroupsChip) {
  const Mesh m = MakeMesh(Job(16, 8, 32), 4, 0).value();
  EXPECT_EQ(m.ChipHoldingExpert(0, 0), 0);
  EXPECT_EQ(m.ChipHoldingExpert(3, 31), 7);   // group 0, expert 31 on chip 7
  EXPECT_EQ(m.ChipHoldingExpert(9, 5), 9);    // group 1 (chips 8..15): expert 5 on chip 9
  EXPECT_EQ(m.RankOfChip(7), 1);
  EXPECT_EQ(m.FirstExpertOfRank(3), 16);
}

TEST(Mesh, TorusCoordinatesAreRowMajor) {
  JobSpec spec = Job(128, 1, 0);
  spec.mutable_topology()->set_torus_x(8);
  spec.mutable_topology()->set_torus_y(16);
  const Mesh m = MakeMesh(spec, 1, 0).value();
  EXPECT_EQ(m.TorusCoords(0), (std::pair<int64_t, int64_t>{0, 0}));
  EXPECT_EQ(m.TorusCoords(13), (std::pair<int64_t, int64_t>{5, 1}));
}

TEST(Mesh, ChipsMustDivideOverRanks) {
  const auto m = MakeMesh(Job(64, 8, 16), 3, 0);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("topology.num_chips=64"), std::string::npos);
}

TEST(Mesh, ChipsPerRankAndExpertParallelMustNest) {
  // 24 chips over 2 ranks = 12 per rank; expert groups of 8 straddle ranks unevenly.
  const auto m = MakeMesh(Job(24, 8, 16), 2, 0);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("mesh.expert_parallel=8"), std::string::npos);
}

TEST(Mesh, ExpertParallelMustDivideExpertsAndChips) {
  EXPECT_FALSE(MakeMesh(Job(4, 8, 8), 1, 0).ok());   // more expert shards than chips
  EXPECT_FALSE(MakeMesh(Job(16, 4, 6), 1, 0).ok());  // 6 experts over 4 shards
}

}  // namespace
}  // namespace openmoe
