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
//
// The model axis. A layout may hold a model piece of a matrix (ParamInfo::model_split(): its rows
// or its columns split over the model group): the update is still that of the whole logical
// matrix. Factoring is decided on the global dims; the statistics that span the split dim are
// summed over `model_comm` (the ranks of this rank's model group, one piece each): a column-split
// matrix's row means of g2 (so its v_row is the whole matrix's, the same on every rank of the
// group), a row-split matrix's column means and the sum of its v_row (for mean(v_row)), and for
// any split matrix the sums of squares of u (clipping) and of the parameter (parameter scale).
// Each split tensor costs two all-reduces of doubles, all its experts together. Replicated
// parameters (norm scales, routers) need no communication, and with model_comm null (one piece)
// nothing is communicated at all.
//
// State layout (state()): the slices in layout order (a tensor's experts in order); per slice
// either v_row (the local rows) then v_col (the local columns), or v (local rows * cols, the
// parameter's own layout). Local rows / columns are the piece's, in its parameter's local order
// (an OpenMoE wi_0 piece's columns are [its a columns | its b columns]); a statistic over a dim
// that is not split (v_row of a column-split matrix) is whole and the same on every rank of the
// group.
#pragma once

#include <cstdint>
#include <vector>

#include "core/communicator.h"
#include "core/tensor.h"
#include "model/optimizer.h"
#include "model/params.h"
#include "proto/job.pb.h"

namespace openmoe {

class Adafactor final : public Optimizer {
 public:
  // model_comm: the ranks of this rank's model group, size layout.model_parts(), rank order =
  // model_index; null when model_parts is 1. Update is collective over it.
  Adafactor(const AdafactorConfig& config, const ParamLayout& layout,
            Communicator* model_comm = nullptr);

  OptimizerKind kind() const override { return OPTIMIZER_ADAFACTOR; }

  // params, grads: flat buffers in `layout`. step counts from 0.
  // global_grad_norm: the norm for global_norm_clip when the gradient is spread over ranks
  // (negative: the norm of `grads` itself).
  void Update(int64_t step, double learning_rate, float* params, const float* grads,
              double global_grad_norm = -1.0) override;

  // All second-moment statistics in one flat buffer (for checkpoints and reductions).
  Tensor& state() override { return state_; }
  const Tensor& state() const override { return state_; }

  // Which dim of a slice's matrix the model axis splits.
  enum class Split { kNone, kRows, kCols };
  // One independently updated matrix (a whole tensor, or one expert's slice of it), as this
  // layout holds it.
  struct Slice {
    int64_t param_offset = 0;    // into the parameter buffer
    int64_t rows = 0, cols = 0;  // local; vectors: rows = 1
    int64_t global_rows = 0, global_cols = 0;  // of the whole logical matrix
    Split split = Split::kNone;
    bool factored = false;       // decided on the global dims
    int64_t state_offset = 0;    // v_row (rows) then v_col (cols), or v (rows * cols)
  };
  const std::vector<Slice>& slices() const { return slices_; }

 private:
  // Slices [first, first + count) updated together: one slice, or every expert of a split tensor
  // (reduced over the model group together).
  struct Group {
    size_t first = 0, count = 0;
    bool reduce = false;  // the tensor is split and model_comm_ is set
  };
  void UpdateFactored(const Group& group, double beta2, double grad_scale, double lr,
                      float* params, const float* grads);
  void UpdateUnfactored(const Group& group, double beta2, double grad_scale, double lr,
                        float* params, const float* grads);
  // lr * parameter scale / clipping denominator for one slice of n global elements.
  double StepSize(double lr, double update_sum_squares, double param_sum_squares, int64_t n) const;

  AdafactorConfig config_;
  Communicator* model_comm_ = nullptr;
  int64_t total_size_ = 0;  // of the flat parameter and gradient buffers
  std::vector<Slice> slices_;
  std::vector<Group> groups_;
  Tensor state_;
  // Scratch for one group: the sums of g^2 over each row and column of every factored slice
  // (all slices' row sums, then all their column sums, then one v_row total per slice), the
  // column factors, and per slice the sums of squares of u and of the parameter.
  std::vector<double> stats_;
  std::vector<float> col_factor_;
  std::vector<double> sums_;
  std::vector<double> row_terms_;  // (rows) each row's term of the update's sum of squares
};

}  // namespace openmoe
