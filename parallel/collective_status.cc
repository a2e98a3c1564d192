#include "parallel/collective_status.h"

#include <cstdint>

namespace openmoe {

absl::Status AgreeOnFirstError(Communicator& comm, const absl::Status& local) {
  std::vector<int64_t> failed(comm.size(), 0);
  failed[comm.rank()] = local.ok() ? 0 : 1;
  comm.AllReduceSum(failed.data(), static_cast<int64_t>(failed.size()));
  for (int r = 0; r < comm.size(); ++r) {
    if (failed[r] == 0) continue;
    // The failing rank's code (one byte) and message.
    std::string payload;
    if (r == comm.rank()) {
      payload.push_back(static_cast<char>(local.code()));
      payload.append(local.message().data(), local.message().size());
    }
    comm.Broadcast(&payload, r);
    if (r == comm.rank()) return local;
    if (payload.empty()) return absl::UnknownError("a rank failed without a message");
    return absl::Status(static_cast<absl::StatusCode>(payload[0]), payload.substr(1));
  }
  return absl::OkStatus();
}

std::vector<std::string> AllGatherBytes(Communicator& comm, const std::string& mine) {
  std::vector<std::string> all(comm.size());
  for (int r = 0; r < comm.size(); ++r) {
    if (r == comm.rank()) all[r] = mine;
    comm.Broadcast(&all[r], r);
  }
  return all;
}

}  // namespace openmoe
