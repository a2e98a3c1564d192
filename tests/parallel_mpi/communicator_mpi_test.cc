// The MPI communicator against answers known in closed form.
#include "parallel/communicator.h"

#include <numeric>

#include "gtest/gtest.h"

namespace openmoe {
namespace {

TEST(MpiCommunicator, AllReduceSumOfRanks) {
  auto world = MakeWorldCommunicator();
  const int n = world->size(), r = world->rank();
  double d = r;
  float f[3] = {static_cast<float>(r), 1.0f, -2.0f * r};
  int64_t i = r + 1;
  world->AllReduceSum(&d, 1);
  world->AllReduceSum(f, 3);
  world->AllReduceSum(&i, 1);
  EXPECT_EQ(d, n * (n - 1) / 2.0);
  EXPECT_EQ(f[0], n * (n - 1) / 2.0f);
  EXPECT_EQ(f[1], static_cast<float>(n));
  EXPECT_EQ(f[2], -1.0f * n * (n - 1));
  EXPECT_EQ(i, n * (n + 1) / 2);
}

// Rank r sends (r + q) % 3 floats to rank q (so some messages are empty), each equal to
// 100 * r + q; rank q checks what arrived from every r.
TEST(MpiCommunicator, AllToAllVWithEmptyMessages) {
  auto world = MakeWorldCommunicator();
  const int n = world->size(), r = world->rank();
  std::vector<int64_t> send_counts(n), recv_counts(n);
  std::vector<float> send;
  for (int q = 0; q < n; ++q) {
    send_counts[q] = (r + q) % 3;
    for (int64_t k = 0; k < send_counts[q]; ++k) send.push_back(100.0f * r + q);
  }
  world->AllToAll(send_counts.data(), recv_counts.data(), 1);
  for (int q = 0; q < n; ++q) EXPECT_EQ(recv_counts[q], (q + r) % 3);
  std::vector<float> recv(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0}));
  world->AllToAllV(send.data(), send_counts, recv.data(), recv_counts);
  size_t k = 0;
  for (int q = 0; q < n; ++q)
    for (int64_t j = 0; j < recv_counts[q]; ++j) EXPECT_EQ(recv[k++], 100.0f * q + r);
}

// The 16-bit all-to-all (bf16 rows): the same pattern, values 100 * r + q as uint16 bit patterns.
TEST(MpiCommunicator, SixteenBitAllToAllVWithEmptyMessages) {
  auto world = MakeWorldCommunicator();
  const int n = world->size(), r = world->rank();
  std::vector<int64_t> send_counts(n), recv_counts(n);
  std::vector<uint16_t> send;
  for (int q = 0; q < n; ++q) {
    send_counts[q] = (r + q) % 3;
    recv_counts[q] = (q + r) % 3;
    for (int64_t k = 0; k < send_counts[q]; ++k) send.push_back(static_cast<uint16_t>(100 * r + q));
  }
  std::vector<uint16_t> recv(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0}));
  world->AllToAllV(send.data(), send_counts, recv.data(), recv_counts);
  size_t k = 0;
  for (int q = 0; q < n; ++q)
    for (int64_t j = 0; j < recv_counts[q]; ++j) EXPECT_EQ(recv[k++], 100 * q + r);
}

TEST(MpiCommunicator, SplitGroupsRanksByColor) {
  auto world = MakeWorldCommunicator();
  auto half = world->Split(world->rank() % 2, world->rank());
  EXPECT_EQ(half->size(), (world->size() + 1 - world->rank() % 2) / 2);
  int64_t v = 1;
  half->AllReduceSum(&v, 1);
  EXPECT_EQ(v, half->size());
}

TEST(MpiCommunicator, BroadcastBytes) {
  auto world = MakeWorldCommunicator();
  std::string s = world->rank() == 0 ? std::string("job spec\0bytes", 14) : "";
  world->Broadcast(&s, 0);
  EXPECT_EQ(s, std::string("job spec\0bytes", 14));
}

}  // namespace
}  // namespace openmoe
