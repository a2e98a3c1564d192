// Collective helpers on top of Communicator for errors and small records: a rank that fails alone
// must not leave the others waiting in the next collective, so every rank learns the first error.
//
// Every function is collective over `comm`: all its ranks call it, in the same order.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "parallel/communicator.h"

namespace openmoe {

// Every rank gets the status of the lowest-numbered failing rank (code and message), or OK when
// every rank passed OK.
absl::Status AgreeOnFirstError(Communicator& comm, const absl::Status& local);

// Every rank's `mine`, in rank order, on every rank (one broadcast per rank: for the small
// per-rank records of a save, not for tensors).
std::vector<std::string> AllGatherBytes(Communicator& comm, const std::string& mine);

}  // namespace openmoe
