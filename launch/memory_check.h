// Memory feasibility of a training job on this machine, checked before the Trainer allocates, so
// that a job too large for the machine fails with one line instead of being killed by the kernel
// (or aborting on std::bad_alloc) halfway through allocating.
//
// The estimate of one rank's bytes, as the Trainer keeps them (fp32, but for what BF16 keeps as
// bf16):
//   parameters + gradients   2 * the rank's ParamLayout (shared parameters once, its chips'
//                            experts; with a model group spanning model_ranks ranks, piece
//                            model_index of the model-split parameters), as Trainer allocates them
//   optimizer state          Adafactor's statistics (MemoryPerChip's rule, model/param_count.h)
//                            or AdamW's two moments (2 * parameters)
//   activations, scratch,    EstimateActivations (model/activation_memory.h: what the decoder
//   communication            keeps, its shared scratch, the expert exchange's kept rows) at the
//                            piece's sizes (ParamLayout::local_dims) for one microbatch of every
//                            data shard the rank works on, train.remat included; kept expert
//                            rows at their bound, min(top_k, capacity) per token
//   runtime                  a fixed 40 MiB (MPI, OpenBLAS, the binary, the data pipeline), 48 MiB
//                            in BF16 (oneDNN's per-thread bf16 copies of float operands)
// An estimate, not a bound: a job near the limit may still fail while allocating.
// Nothing here is collective.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "proto/job.pb.h"

namespace openmoe {

struct RankMemoryEstimate {
  double params_bytes = 0;
  double grads_bytes = 0;
  double optimizer_bytes = 0;
  double activation_bytes = 0;     // saved for the backward
  double scratch_bytes = 0;
  double communication_bytes = 0;
  double runtime_bytes = 0;
  double total_bytes = 0;
  int64_t chips_per_rank = 0;
};

// `spec` must have passed ValidateJob. Fails (naming the fields) only when the mesh does not fit
// `world_size` ranks, as MakeMesh does.
absl::Status EstimateRankMemory(const JobSpec& spec, int world_size, int rank,
                                RankMemoryEstimate* out);

// Physical memory of this machine (sysconf), or the address-space limit (RLIMIT_AS) when lower;
// `what` is set to say which.
int64_t AvailableMemoryBytes(std::string* what = nullptr);

// OK when the estimate for `rank` fits `available_bytes`; else ResourceExhausted with one line:
// "job (<description>): needs ~X GiB per rank (...), this machine has Y GiB; reduce ... or use
// more ranks". A mesh that does not fit the world passes (Trainer::Create reports it).
absl::Status CheckRankMemory(const JobSpec& spec, int world_size, int rank,
                             int64_t available_bytes, const std::string& job_description,
                             const std::string& available_what = "this machine has");

}  // namespace openmoe
