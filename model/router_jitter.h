// Router jitter (Switch Transformer; flaxformer's router): in training, the router's input is
// multiplied elementwise by noise uniform in [1 - eps, 1 + eps); the experts still see the
// un-jittered input. The noise of element k of token (row, position) is a pure function of
// (seed, step, layer, global row, position, k), drawn from the counter-based RNG, so the same
// job gives the same noise on any mesh, number of ranks or microbatching.
#pragma once

#include <cstdint>

#include "core/batch.h"
#include "core/tensor.h"

namespace openmoe {

// noise: resized to (batch.num_tokens(), d_model). Rows are keyed by batch.row_ids (their global
// row in the step's global batch; local indices when absent) and batch.step.
void FillRouterJitter(double eps, uint64_t seed, int64_t layer, const Batch& batch, int64_t d_model,
                      Tensor* noise);

}  // namespace openmoe
