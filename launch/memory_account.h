// The memory account of a training step: what this rank holds, by owner, beside the process's
// peak resident memory and the estimate the memory check and `openmoe plan` make before running
// (launch/memory_check.h, from the same activation model, model/activation_memory.h).
//
//   parameters, gradients    the rank's ParamLayout, fp32
//   optimizer state          Adafactor's factored statistics or AdamW's moments
//   saved activations        what the decoder keeps for the backward, by kind (residual stream
//                            and norm statistics, attention, dense FFN, MoE)
//   scratch                  the decoder's shared arena: one sub-block's temporaries
//   communication            the expert exchange's kept rows and wire buffers, the gradient
//                            buckets' receive buffers (and their bf16 copies)
//   other                    peak RSS minus all of the above: the binary, MPI, OpenBLAS, the
//                            data pipeline, allocator slack
// Taken after a step (the buffers have their steady sizes). AccountMemory is collective over
// the world (peak RSS is the max over ranks); the rest describes the calling rank.
#pragma once

#include <cstdint>
#include <string>

#include "launch/trainer.h"

namespace openmoe {

struct MemoryAccount {
  int64_t params = 0, grads = 0, optimizer = 0;
  Decoder::Memory activations;
  int64_t communication = 0;
  int64_t peak_rss = 0;           // this rank's
  int64_t peak_rss_max = 0;       // over ranks
  double estimate = 0;            // EstimateRankMemory's total for this rank
  int64_t tokens = 0;             // this rank's tokens per microbatch
  int64_t chips_per_rank = 0;
  int64_t accounted() const {
    return params + grads + optimizer + activations.saved() + activations.scratch + communication;
  }
};

MemoryAccount AccountMemory(Trainer& trainer);

// One line per owner, for the console (MiB, and bytes per token for the activations).
std::string MemoryAccountText(const MemoryAccount& account);
// A JSON object ({"params": bytes, ...}), for the metrics.
std::string MemoryAccountJson(const MemoryAccount& account);

// This process's peak resident set (VmHWM), bytes; 0 if unreadable.
int64_t PeakRssBytes();

}  // namespace openmoe
