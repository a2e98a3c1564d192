// ParallelFor: an elementwise or row-wise loop split over the GEMM threads, so the passes between
// GEMMs (conversions, activations, norms, softmax, the optimizer) keep every core busy.
//
// fn(begin, end) is called on disjoint ranges covering [0, n), concurrently; each range holds at
// least min_chunk indices (except a shorter last one). The caller takes ranges too, from a shared
// counter, so a helper thread the OS has not scheduled (a busy machine) delays nothing: the caller
// does the work itself, and only waits for ranges already being run. Helpers are a persistent
// pool of GemmThreads() - 1 threads, woken per call. Runs inline (fn(0, n)) when n < 2 *
// min_chunk, when GemmThreads() is 1, or when called from inside a ParallelFor (no nesting).
// Calls from several threads at once are serialised (one pool); fn must not throw.
#pragma once

#include <cstdint>

#include "absl/functional/function_ref.h"

namespace openmoe {

void ParallelFor(int64_t n, int64_t min_chunk, absl::FunctionRef<void(int64_t, int64_t)> fn);

}  // namespace openmoe
