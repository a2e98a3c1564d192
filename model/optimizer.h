// Optimizer: the one interface the trainer steps, with Adafactor (model/adafactor.h) and AdamW
// (model/adamw.h) behind it, and the factory that picks one from the job spec.
//
// Update applies one step to `params` from `grads` (flat buffers in the ParamLayout the optimizer
// was built with). Every implementation treats each expert's slice on its own or elementwise, so
// the update does not depend on how experts are sharded over ranks; a layout holding a model piece
// of its parameters (ParamLayout::model_parts() > 1) gets the whole layout's update of its piece,
// the statistics that span the piece reduced over its model group. state() is every optimizer
// statistic in one flat fp32 buffer (checkpoints save, load and reshard it; see
// launch/checkpoint/index.h for its per-tensor layout).
#pragma once

#include <cstdint>
#include <memory>

#include "core/communicator.h"
#include "core/tensor.h"
#include "model/params.h"
#include "proto/job.pb.h"

namespace openmoe {

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  virtual OptimizerKind kind() const = 0;

  // step counts from 0. global_grad_norm: the gradient's global L2 norm, for global-norm clipping
  // when the gradient is spread over ranks (negative: the norm of `grads` itself).
  virtual void Update(int64_t step, double learning_rate, float* params, const float* grads,
                      double global_grad_norm = -1.0) = 0;

  virtual Tensor& state() = 0;
  virtual const Tensor& state() const = 0;
};

// Adafactor (spec.optimizer) or AdamW (spec.adamw), as spec.train.optimizer says. model_comm: the
// ranks of this rank's model group (size layout.model_parts(), rank = model piece), which Update
// is then collective over; null when model_parts is 1.
std::unique_ptr<Optimizer> MakeOptimizer(const JobSpec& spec, const ParamLayout& layout,
                                         Communicator* model_comm = nullptr);

// The factor global-norm clipping multiplies every gradient by: min(1, clip / norm); 1 when clip
// is 0 (disabled). norm < 0: computed from grads (n floats), right only when they are the whole
// gradient (one rank, no model pieces); the trainer passes the global norm.
double GlobalNormClipScale(double clip, double global_grad_norm, const float* grads, int64_t n);

// "adafactor" or "adamw", for messages.
const char* OptimizerName(OptimizerKind kind);

}  // namespace openmoe
