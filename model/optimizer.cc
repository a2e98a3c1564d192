#include "model/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/kernels.h"
#include "model/adafactor.h"
#include "model/adamw.h"

namespace openmoe {

std::unique_ptr<Optimizer> MakeOptimizer(const JobSpec& spec, const ParamLayout& layout,
                                         Communicator* model_comm) {
  if (spec.train().optimizer() == OPTIMIZER_ADAMW) {
    // Elementwise: a piece's update needs nothing from the other pieces.
    return std::make_unique<AdamW>(spec.adamw(), spec.optimizer().global_norm_clip(), layout);
  }
  return std::make_unique<Adafactor>(spec.optimizer(), layout, model_comm);
}

double GlobalNormClipScale(double clip, double global_grad_norm, const float* grads, int64_t n) {
  if (clip <= 0) return 1.0;
  const double norm = global_grad_norm >= 0 ? global_grad_norm : std::sqrt(SumSquares(grads, n));
  return std::min(1.0, clip / norm);
}

const char* OptimizerName(OptimizerKind kind) {
  return kind == OPTIMIZER_ADAMW ? "adamw" : "adafactor";
}

}  // namespace openmoe
