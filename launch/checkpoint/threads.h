// Running a checkpoint's per-tensor work (compress and write, read and decompress) on a few
// threads of this process. Not collective.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/status.h"

namespace openmoe {

// Calls fn(0) .. fn(n - 1), each exactly once, on up to `threads` threads (the caller's included).
// Returns the error of the lowest index that failed (the others still run), else OK.
absl::Status ForEachInParallel(int64_t n, int threads,
                               const std::function<absl::Status(int64_t)>& fn);

// Threads for checkpoint work in this process: the OpenBLAS thread count the trainer chose (the
// cores of this machine shared among its ranks), at least 1.
int CheckpointThreads();

}  // namespace openmoe
