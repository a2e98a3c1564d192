// Group-limited routing with one expert group per rank: every token's experts sit on one rank,
// so (with each token row sent once per rank, parallel/expert_parallel.h) the bytes that cross
// ranks fall against unlimited routing of the same job, as the runner's counters count them.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/layout_check.h"

namespace openmoe {
namespace {

// Remote bytes (rows and row indices) of one forward and backward of the first batch, over
// every rank.
int64_t RemoteBytes(const JobSpec& spec, Communicator* world) {
  auto trainer = Trainer::Create(spec, world).value();
  trainer->ComputeGradients(trainer->NextLocalBatch().value());
  const ExchangeCounters& c = trainer->runner()->counters();
  int64_t bytes = c.bytes_remote + c.index_bytes_remote;
  world->AllReduceSum(&bytes, 1);
  return bytes;
}

TEST(GroupLimitedMpi, OneGroupPerRankSendsFewerBytes) {
  auto world = MakeWorldCommunicator();
  // 8 chips, one expert each, experts 0..7 in chip order: rank r holds experts of one group.
  JobSpec spec = testing::OnMesh(testing::LayoutJob(8), 8, 4, 8);
  // Few drops: a token with one kept choice sends one row either way.
  spec.mutable_router()->set_capacity_factor(4.0);
  const int64_t ranks = world->size();
  const int64_t unlimited = RemoteBytes(spec, world.get());
  spec.mutable_router()->set_num_expert_groups(ranks);
  spec.mutable_router()->set_groups_per_token(1);
  const int64_t limited = RemoteBytes(spec, world.get());
  ASSERT_GT(unlimited, 0);
  if (world->rank() == 0)
    std::printf("group-limited: %lld of %lld remote bytes (%.3f) on %lld ranks\n",
                static_cast<long long>(limited), static_cast<long long>(unlimited),
                static_cast<double>(limited) / static_cast<double>(unlimited),
                static_cast<long long>(ranks));
  EXPECT_LT(limited, unlimited);
  // Each token's two experts are on one rank: its dispatch is one row or none, against up to two
  // rows' worth of ranks unlimited (combine and the backward's outbound gradients still go per
  // assignment).
  EXPECT_LT(static_cast<double>(limited), 0.95 * static_cast<double>(unlimited))
      << limited << " vs " << unlimited;
}

}  // namespace
}  // namespace openmoe
