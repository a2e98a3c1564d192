// Communicator::LocalSize and AllReduceMin under mpirun, against closed forms: CTest starts every
// rank on this one machine, so all of them share it.
#include <cstdint>

#include "gtest/gtest.h"
#include "parallel/communicator.h"

namespace openmoe {
namespace {

TEST(MpiCommunicator, LocalSizeCountsTheRanksOnThisMachine) {
  auto world = MakeWorldCommunicator();
  EXPECT_EQ(world->LocalSize(), world->size());
  // A sub-communicator of the even ranks: its own size, also all local.
  auto evens = world->Split(world->rank() % 2, world->rank());
  EXPECT_EQ(evens->LocalSize(), evens->size());
  EXPECT_EQ(evens->size(), (world->size() + 1 - world->rank() % 2) / 2);
}

TEST(MpiCommunicator, AllReduceMinOfRanks) {
  auto world = MakeWorldCommunicator();
  const int n = world->size(), r = world->rank();
  int64_t v[3] = {r, 100 - r, r == n - 1 ? -7 : 5};
  world->AllReduceMin(v, 3);
  EXPECT_EQ(v[0], 0);
  EXPECT_EQ(v[1], 100 - (n - 1));
  EXPECT_EQ(v[2], -7);
}

TEST(SelfCommunicator, LocalSizeIsOneAndMinIsTheIdentity) {
  SelfCommunicator self;
  EXPECT_EQ(self.LocalSize(), 1);
  int64_t v[2] = {4, -3};
  self.AllReduceMin(v, 2);
  EXPECT_EQ(v[0], 4);
  EXPECT_EQ(v[1], -3);
}

}  // namespace
}  // namespace openmoe
