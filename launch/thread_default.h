// The default OpenBLAS thread count of a rank when neither train.threads nor OPENBLAS_NUM_THREADS
// sets one: small models run their GEMMs on one thread, larger ones on every core the rank has.
//
// Why: a GEMM of a small model is too short for OpenBLAS's threads to pay for their start-up and
// synchronisation, so a second thread makes a step slower, not faster. Measured on this 2-core
// machine while other builds kept it busy (load ~8), one process, `openmoe train`, 1 vs 2
// threads in alternating pairs, whole-process medians (wall s; cpu s = user + sys):
//   tiny.pbtxt, 200 steps (d_model 64, 512 tokens/step):  wall 21.6 vs 27.7 (1/2 = 0.78),
//     cpu 9.5 vs 13.7 (0.70); ~3.1 s vs ~6.1 s reported on a quiet machine
//   tiny with d_model 256, head_dim 64, d_ff 512, 10 steps: wall 12.2 vs 17.7 (0.60),
//     cpu 4.4 vs 6.3 (0.70)
//   bench_small.pbtxt, 3 steps (d_model 512, 4096 tokens/step): wall 82.9 vs 86.0 (0.96,
//     a tie on a machine with no idle core), cpu 36.0 vs 40.1 (0.90)
// The second thread costs ~43% more CPU on the small models but ~11% on bench_small, where
// quiet-machine runs reach 72-80% of the 2-thread sgemm peak (README, Benchmarks).
// Rule: d_model < kMinDModelForThreads (512) -> 1 thread; otherwise all of cores_for_this_rank.
// d_model is one dimension of every GEMM of a step (attention projections, FFNs, experts,
// router, logits), so it tracks GEMM size without depending on the batch; the threshold lies
// between the largest measured loser (256) and bench_small (512).
#pragma once

#include <cstdint>

#include "proto/job.pb.h"

namespace openmoe {

inline constexpr int64_t kMinDModelForThreads = 512;

// Threads for this rank's GEMMs: 1 for models with d_model below kMinDModelForThreads, else
// cores_for_this_rank (the cores this rank may use, e.g. its affinity mask's count divided by the
// ranks on its machine); at least 1. Pure: reads only spec.model().d_model(); not collective.
int DefaultGemmThreads(const JobSpec& spec, int cores_for_this_rank);

}  // namespace openmoe
