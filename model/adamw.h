// AdamW (Loshchilov & Hutter) as Megatron and DeepSpeed run it, over a ParamLayout's flat buffer.
//
// With g the gradient times the global-norm clipping factor min(1, clip / ||g||) and t from 0:
//   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
//   m_hat = m / (1 - beta1^(t+1)); v_hat = v / (1 - beta2^(t+1))
//   param -= lr * (m_hat / (sqrt(v_hat) + epsilon) + weight_decay * param)
// Weight decay is decoupled (it does not pass through m, v) and applies to matrices only (every
// tensor of rank >= 2 per expert: kernels, embedding, router, logits), not to the 1-D norm scales.
// Every step is elementwise, so an expert's update does not depend on how experts are sharded, nor
// a model piece's on the split: nothing here reads a local shape but the tensor rank (the weight
// decay rule), which a piece shares with its whole tensor. The clipping norm must be the global
// one (global_grad_norm) when the gradient is spread over ranks or model pieces.
//
// state() is m then v: two flat fp32 buffers with exactly the parameter buffer's layout, m at
// [0, n) and v at [n, 2n) for n = layout.total_size().
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/optimizer.h"
#include "model/params.h"
#include "proto/job.pb.h"

namespace openmoe {

class AdamW final : public Optimizer {
 public:
  // global_norm_clip: 0 disables clipping.
  AdamW(const AdamWConfig& config, double global_norm_clip, const ParamLayout& layout);

  OptimizerKind kind() const override { return OPTIMIZER_ADAMW; }
  void Update(int64_t step, double learning_rate, float* params, const float* grads,
              double global_grad_norm = -1.0) override;
  Tensor& state() override { return state_; }
  const Tensor& state() const override { return state_; }

  // The moments of parameter element i: m()[i], v()[i].
  float* m() { return state_.data(); }
  float* v() { return state_.data() + total_size_; }

 private:
  // A run of the flat buffer that is (or is not) weight-decayed: one parameter tensor.
  struct Range {
    int64_t offset = 0, size = 0;
    bool decay = false;
  };
  AdamWConfig config_;
  double global_norm_clip_ = 0;
  int64_t total_size_ = 0;
  std::vector<Range> ranges_;
  Tensor state_;  // (2 * total_size): m, then v
};

}  // namespace openmoe
