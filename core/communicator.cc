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

}  // namespace

namespace {

// The all-gather as a blocking all-to-all-v: this rank's block sent to every rank.
template <typename T>
void AllGatherVByAllToAllV(Communicator& comm, const T* send, T* recv,
                           const std::vector<int64_t>& counts) {
  const int ranks = comm.size();
  const int64_t mine = counts[comm.rank()];
  std::vector<T> repeated;
  repeated.reserve(static_cast<size_t>(ranks * mine));
  for (int q = 0; q < ranks; ++q) repeated.insert(repeated.end(), send, send + mine);
  comm.AllToAllV(repeated.data(), std::vector<int64_t>(ranks, mine), recv, counts);
}

}  // namespace

std::unique_ptr<PendingCollective> Communicator::StartAllGatherV(
    const float* send, float* recv, const std::vector<int64_t>& counts) {
  AllGatherVByAllToAllV(*this, send, recv, counts);
  return Completed();
}

std::unique_ptr<PendingCollective> Communicator::StartAllGatherV(
    const uint16_t* send, uint16_t* recv, const std::vector<int64_t>& counts) {
  AllGatherVByAllToAllV(*this, send, recv, counts);
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
