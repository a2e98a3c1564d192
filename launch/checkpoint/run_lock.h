// One run per checkpoint directory, and a writable one, checked before any compute.
//
// Rank 0 creates checkpoint.dir if needed and takes an exclusive flock(2) on <dir>/LOCK, which
// holds "pid <pid> host <host> since <UTC time>" of the holder. The kernel drops the lock when the
// holder exits, however it exits, so a lock is never stale; a second run gets an error naming the
// holder. Then every rank creates and removes a probe file in the directory, so that a directory
// some rank cannot write is reported at start rather than at the first save.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"

namespace openmoe {

class RunLock {
 public:
  // Collective over `world`. Errors name checkpoint.dir and, for a held lock, its holder.
  static absl::StatusOr<std::unique_ptr<RunLock>> Acquire(const std::string& dir,
                                                          Communicator& world);
  ~RunLock();  // releases (rank 0)
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  RunLock() = default;
  int fd_ = -1;
};

}  // namespace openmoe
