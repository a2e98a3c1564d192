#include "model/router_jitter.h"

#include <string>

#include "core/check.h"
#include "core/rng.h"

namespace openmoe {

void FillRouterJitter(double eps, uint64_t seed, int64_t layer, const Batch& batch, int64_t d_model,
                      Tensor* noise) {
  OPENMOE_CHECK(batch.row_ids.empty() || static_cast<int64_t>(batch.row_ids.size()) == batch.rows);
  // One stream per (layer, step); the counter is the element's index in the global batch.
  const CounterRng rng(seed, StreamId("router_jitter.layer_" + std::to_string(layer) + ".step_" +
                                      std::to_string(batch.step)));
  noise->ResizeUninitialized({batch.num_tokens(), d_model});
  const double lo = 1.0 - eps, width = 2.0 * eps;
  for (int64_t r = 0; r < batch.rows; ++r) {
    const int64_t global_row = batch.row_ids.empty() ? r : batch.row_ids[r];
    for (int64_t s = 0; s < batch.seq_len; ++s) {
      const uint64_t first = static_cast<uint64_t>((global_row * batch.seq_len + s) * d_model);
      float* out = noise->data() + (r * batch.seq_len + s) * d_model;
      for (int64_t k = 0; k < d_model; ++k) {
        out[k] = static_cast<float>(lo + width * rng.Uniform(first + k));
      }
    }
  }
}

}  // namespace openmoe
