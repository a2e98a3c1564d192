#include "core/communicator.h"

#include "core/check.h"

namespace openmoe {

namespace {

// A collective that ran to completion when it was started.
class CompletedCollective final : public PendingCollective {
 public:
  bool Test() override { return true; }
};

std::unique_ptr<PendingCollective> Completed() { return std::make_unique<CompletedCollective>(); }

// Equal blocks of per_rank values per rank, as AllToAllV counts.
std::vector<int64_t> EqualCounts(int ranks, int64_t per_rank) {
  return std::vector<int64_t>(static_cast<size_t>(ranks), per_rank);
}

}  // namespace

std::unique_ptr<PendingCollective> Communicator::StartAllReduceSum(float* data, int64_t n) {
  AllReduceSum(data, n);
  return Completed();
}

std::unique_ptr<PendingCollective> Communicator::StartAllToAll(const uint16_t* send,
                                                               uint16_t* recv, int64_t per_rank) {
  AllToAllV(send, EqualCounts(size(), per_rank), recv, EqualCounts(size(), per_rank));
  return Completed();
}

std::unique_ptr<PendingCollective> Communicator::StartAllGather(const uint16_t* send,
                                                                uint16_t* recv, int64_t per_rank) {
  // Every rank sends its one block to every rank.
  std::vector<uint16_t> repeated;
  repeated.reserve(static_cast<size_t>(size() * per_rank));
  for (int q = 0; q < size(); ++q) repeated.insert(repeated.end(), send, send + per_rank);
  AllToAllV(repeated.data(), EqualCounts(size(), per_rank), recv, EqualCounts(size(), per_rank));
  return Completed();
}

std::unique_ptr<PendingCollective> Communicator::StartAllToAllV(
    const float* send, const std::vector<int64_t>& send_counts, float* recv,
    const std::vector<int64_t>& recv_counts) {
  AllToAllV(send, send_counts, recv, recv_counts);
  return Completed();
}

std::unique_ptr<PendingCollective> Communicator::StartAllToAllV(
    const uint16_t* send, const std::vector<int64_t>& send_counts, uint16_t* recv,
    const std::vector<int64_t>& recv_counts) {
  AllToAllV(send, send_counts, recv, recv_counts);
  return Completed();
}

std::unique_ptr<Communicator> Communicator::Duplicate() {
  OPENMOE_CHECK_MSG(false, "this communicator cannot be duplicated");
  return nullptr;
}

}  // namespace openmoe
