// Adafactor as T5X runs it for OpenMoE.
//
// For each parameter matrix (each expert's matrix on its own; vectors unfactored):
//   beta2_t = 1 - (t + 1)^-decay_exponent                          (t from 0)
//   g2 = g^2 + epsilon1
//   factored (both dims >= min_dim_size_to_factor):
//     v_row = beta2 v_row + (1 - beta2) mean_cols(g2);  v_col likewise over rows
//     u = g / sqrt(v_row / mean(v_row)) / sqrt(v_col)         (outer product of the factors)
//   otherwise: v = beta2 v + (1 - beta2) g2;  u = g / sqrt(v)
//   u /= max(1, rms(u) / clipping_threshold)
//   param -= lr * max(rms(param), epsilon2) * u                 (multiply_by_parameter_scale)
// No momentum, no weight decay. Every expert is treated as its own parameter (factoring, clipping
// RMS and parameter scale), so the update does not depend on how experts are sharded.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/optimizer.h"
#include "model/params.h"
#include "proto/job.pb.h"

namespace openmoe {

class Adafactor final : public Optimizer {
 public:
  Adafactor(const AdafactorConfig& config, const ParamLayout& layout);

  OptimizerKind kind() const override { return OPTIMIZER_ADAFACTOR; }

  // params, grads: flat buffers in `layout`. step counts from 0.
  // global_grad_norm: the norm for global_norm_clip when the gradient is spread over ranks
  // (negative: the norm of `grads` itself).
  void Update(int64_t step, double learning_rate, float* params, const float* grads,
              double global_grad_norm = -1.0) override;

  // All second-moment statistics in one flat buffer (for checkpoints and reductions).
  Tensor& state() override { return state_; }
  const Tensor& state() const override { return state_; }

  // One independently updated matrix (a whole tensor, or one expert's slice of it).
  struct Slice {
    int64_t param_offset = 0;  // into the parameter buffer
    int64_t rows = 0, cols = 0;  // vectors: rows = 1
    bool factored = false;
    int64_t state_offset = 0;  // v_row (rows) then v_col (cols), or v (rows * cols)
  };
  const std::vector<Slice>& slices() const { return slices_; }

 private:
  void UpdateFactored(const Slice& s, double beta2, double grad_scale, double lr, float* params,
                      const float* grads);
  void UpdateUnfactored(const Slice& s, double beta2, double grad_scale, double lr, float* params,
                        const float* grads);
  // lr * parameter scale / clipping denominator for one slice.
  double StepSize(double lr, double update_sum_squares, double param_sum_squares, int64_t n) const;

  AdafactorConfig config_;
  int64_t total_size_ = 0;  // of the flat parameter and gradient buffers
  std::vector<Slice> slices_;
  Tensor state_;
  // Scratch for one factored slice, sized for the widest: column sums of g^2, column factors.
  std::vector<double> col_sum_;
  std::vector<float> col_factor_;
};

}  // namespace openmoe
