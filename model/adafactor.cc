#include "model/adafactor.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/kernels.h"
#include "core/parallel_for.h"

namespace openmoe {

Adafactor::Adafactor(const AdafactorConfig& config, const ParamLayout& layout,
                     Communicator* model_comm)
    : config_(config), model_comm_(model_comm), total_size_(layout.total_size()) {
  OPENMOE_CHECK_MSG(layout.model_parts() == 1 ||
                        (model_comm != nullptr && model_comm->size() == layout.model_parts()),
                    "Adafactor on model piece %d of %d needs the model group's communicator",
                    static_cast<int>(layout.model_index()), static_cast<int>(layout.model_parts()));
  if (layout.model_parts() == 1) model_comm_ = nullptr;  // nothing is split: nothing to reduce
  int64_t state_size = 0;
  size_t stats_size = 0, col_factor_size = 0, sums_size = 0;
  for (const ParamInfo& p : layout.params()) {
    // An expert tensor (E, r, c) is E parameters of their own, so that nothing (factors, clipping,
    // parameter scale) depends on how experts are sharded.
    const int64_t count = p.is_expert ? p.shape[0] : 1;
    const int matrix_rank = static_cast<int>(p.shape.size()) - (p.is_expert ? 1 : 0);
    OPENMOE_CHECK_MSG(matrix_rank == 1 || matrix_rank == 2,
                      "%s: Adafactor takes vectors and matrices (per expert), got rank %d",
                      p.name.c_str(), matrix_rank);
    const size_t g = p.global_shape.size();
    const int64_t rows = matrix_rank == 2 ? p.shape[p.shape.size() - 2] : 1;
    const int64_t cols = p.shape.back();
    const int64_t global_rows = matrix_rank == 2 ? p.global_shape[g - 2] : 1;
    const int64_t global_cols = p.global_shape[g - 1];
    const Split split = rows != global_rows   ? Split::kRows
                        : cols != global_cols ? Split::kCols
                                              : Split::kNone;
    // Factoring is a property of the logical matrix, not of the piece held here.
    const int64_t min_dim = config.min_dim_size_to_factor();
    const bool factored = config.factored() && matrix_rank == 2 && global_rows >= min_dim &&
                          global_cols >= min_dim;
    const bool together = split != Split::kNone && model_comm_ != nullptr;
    for (int64_t e = 0; e < count; ++e) {
      if (!together || e == 0) {
        groups_.push_back({.first = slices_.size(),
                           .count = static_cast<size_t>(together ? count : 1),
                           .reduce = together});
      }
      slices_.push_back({.param_offset = p.offset + e * rows * cols,
                         .rows = rows,
                         .cols = cols,
                         .global_rows = global_rows,
                         .global_cols = global_cols,
                         .split = split,
                         .factored = factored,
                         .state_offset = state_size});
      state_size += factored ? rows + cols : rows * cols;
    }
    const size_t n = static_cast<size_t>(together ? count : std::min<int64_t>(count, 1));
    if (factored) {
      stats_size = std::max(stats_size, n * static_cast<size_t>(rows + cols + 1));
      col_factor_size = std::max(col_factor_size, n * static_cast<size_t>(cols));
    }
    sums_size = std::max(sums_size, 2 * n);
  }
  state_.Resize({state_size});
  stats_.resize(stats_size);
  col_factor_.resize(col_factor_size);
  sums_.resize(sums_size);
}

void Adafactor::Update(int64_t step, double learning_rate, float* params, const float* grads,
                       double global_grad_norm) {
  OPENMOE_CHECK(step >= 0);
  const double beta2 = 1.0 - std::pow(static_cast<double>(step) + 1.0, -config_.decay_exponent());
  // Global-norm clipping multiplies every gradient by one factor. grads is const (and large), so
  // the factor is folded into each slice's arithmetic instead of being applied to a copy.
  const double grad_scale =
      GlobalNormClipScale(config_.global_norm_clip(), global_grad_norm, grads, total_size_);
  for (const Group& group : groups_) {
    if (slices_[group.first].factored) {
      UpdateFactored(group, beta2, grad_scale, learning_rate, params, grads);
    } else {
      UpdateUnfactored(group, beta2, grad_scale, learning_rate, params, grads);
    }
  }
}

double Adafactor::StepSize(double lr, double update_sum_squares, double param_sum_squares,
                           int64_t n) const {
  double step = lr;
  if (config_.clipping_threshold() > 0) {
    step /= std::max(1.0, std::sqrt(update_sum_squares / n) / config_.clipping_threshold());
  }
  if (config_.multiply_by_parameter_scale()) {
    step *= std::max(std::sqrt(param_sum_squares / n), config_.epsilon2());
  }
  return step;
}

// Per group, three passes over each slice: g^2 statistics; the update's sum of squares; the
// update itself, with the model group's reductions between them. u is never stored: it is the
// outer product of the factors times g, recomputed when needed. The slices of a group are
// experts of one tensor, so they share rows and cols.
void Adafactor::UpdateFactored(const Group& group, double beta2, double grad_scale, double lr,
                               float* params, const float* grads) {
  const Slice& shape = slices_[group.first];
  const int64_t rows = shape.rows, cols = shape.cols, n = static_cast<int64_t>(group.count);
  const Split split = shape.split;
  double* row_sums = stats_.data();             // (n, rows)
  double* col_sums = row_sums + n * rows;       // (n, cols)
  double* v_row_totals = col_sums + n * cols;   // (n)
  double* sums = sums_.data();                  // (n, 2): sum u^2, sum param^2
  const double decay = 1.0 - beta2, g2_scale = grad_scale * grad_scale;
  const double eps1 = config_.epsilon1();
  auto v_row_of = [&](int64_t k) { return state_.data() + slices_[group.first + k].state_offset; };
  // mean(g^2 + eps1) = mean(g^2) + eps1, so epsilon1 is added to the means, not to every element.
  auto update_v_row = [&](int64_t k) {
    float* v_row = v_row_of(k);  // (rows)
    double total = 0.0;
    for (int64_t i = 0; i < rows; ++i) {
      v_row[i] = static_cast<float>(beta2 * v_row[i] +
                                    decay * (g2_scale * row_sums[k * rows + i] / shape.global_cols +
                                             eps1));
      total += v_row[i];
    }
    v_row_totals[k] = total;
  };

  // The passes run on the GEMM threads by rows (or, for the column sums, by columns); every sum
  // keeps its order (a row's LaneSum, a column's rows in order, the rows' terms in order), so the
  // update is the same bit for bit whatever the thread count.
  const int64_t min_rows = std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
  for (int64_t k = 0; k < n; ++k) {
    const float* g = grads + slices_[group.first + k].param_offset;  // (rows, cols)
    double* col_sum = col_sums + k * cols;
    ParallelFor(rows, min_rows, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float* gi = g + i * cols;
        row_sums[k * rows + i] = LaneSum(cols, [&](int64_t j) {
          return static_cast<double>(gi[j]) * gi[j];
        });
      }
    });
    ParallelFor(cols, 64, [&](int64_t begin, int64_t end) {
      std::fill(col_sum + begin, col_sum + end, 0.0);
      for (int64_t i = 0; i < rows; ++i) {
        const float* gi = g + i * cols;
        for (int64_t j = begin; j < end; ++j) col_sum[j] += static_cast<double>(gi[j]) * gi[j];
      }
    });
    // Whole rows here: v_row is final now (and its total is this piece's share of the sum).
    if (split != Split::kCols) update_v_row(k);
  }
  if (group.reduce) {
    if (split == Split::kCols) {
      model_comm_->AllReduceSum(row_sums, n * rows);  // each row's sum over every column
    } else {
      model_comm_->AllReduceSum(col_sums, n * cols + n);  // column sums and v_row totals
    }
  }
  if (split == Split::kCols)
    for (int64_t k = 0; k < n; ++k) update_v_row(k);  // the same on every rank of the group

  for (int64_t k = 0; k < n; ++k) {
    const Slice& s = slices_[group.first + k];
    const float* g = grads + s.param_offset;  // (rows, cols)
    const float* p = params + s.param_offset;  // (rows, cols)
    const float* v_row = v_row_of(k);          // (rows)
    float* v_col = v_row_of(k) + rows;         // (cols)
    float* col_factor = col_factor_.data() + k * cols;
    const double* col_sum = col_sums + k * cols;
    for (int64_t j = 0; j < cols; ++j) {
      v_col[j] = static_cast<float>(beta2 * v_col[j] +
                                    decay * (g2_scale * col_sum[j] / s.global_rows + eps1));
      col_factor[j] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(v_col[j])));
    }
    // u[i, j] = grad_scale * g[i, j] * row_factor(i) * col_factor[j]; grad_scale rides on the row.
    const double v_row_mean = v_row_totals[k] / s.global_rows;
    row_terms_.resize(static_cast<size_t>(rows));
    ParallelFor(rows, min_rows, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float* gi = g + i * cols;
        const double rf = grad_scale / std::sqrt(v_row[i] / v_row_mean);
        row_terms_[i] = rf * rf * LaneSum(cols, [&](int64_t j) {
                          const double x = gi[j] * col_factor[j];
                          return x * x;
                        });
      }
    });
    double u_sum_squares = 0.0;
    for (int64_t i = 0; i < rows; ++i) u_sum_squares += row_terms_[i];
    sums[2 * k] = u_sum_squares;
    sums[2 * k + 1] = SumSquares(p, rows * cols);
  }
  if (group.reduce) model_comm_->AllReduceSum(sums, 2 * n);

  for (int64_t k = 0; k < n; ++k) {
    const Slice& s = slices_[group.first + k];
    const double step = StepSize(lr, sums[2 * k], sums[2 * k + 1], s.global_rows * s.global_cols);
    const float* g = grads + s.param_offset;
    float* p = params + s.param_offset;
    const float* v_row = v_row_of(k);
    const float* col_factor = col_factor_.data() + k * cols;
    const double v_row_mean = v_row_totals[k] / s.global_rows;
    ParallelFor(rows, min_rows, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float a =
            static_cast<float>(step * (grad_scale / std::sqrt(v_row[i] / v_row_mean)));
        const float* gi = g + i * cols;
        float* pi = p + i * cols;
        for (int64_t j = 0; j < cols; ++j) pi[j] -= a * (gi[j] * col_factor[j]);
      }
    });
  }
}

// Two passes per slice: the moving average with the update's sum of squares, then the update,
// recomputing u = g / sqrt(v) from the new v instead of storing it. std::sqrt keeps these loops
// scalar (errno, without -fno-math-errno); that is ~3x the factored path's time per element,
// acceptable because unfactored tensors are the small ones (norm scales, routers).
void Adafactor::UpdateUnfactored(const Group& group, double beta2, double grad_scale, double lr,
                                 float* params, const float* grads) {
  const int64_t count = static_cast<int64_t>(group.count);
  double* sums = sums_.data();  // (count, 2): sum u^2 (without grad_scale), sum param^2
  const float keep = static_cast<float>(beta2), decay = static_cast<float>(1.0 - beta2);
  const float g2_scale = static_cast<float>(grad_scale * grad_scale);
  const float eps1 = static_cast<float>(config_.epsilon1());
  for (int64_t k = 0; k < count; ++k) {
    const Slice& s = slices_[group.first + k];
    const int64_t n = s.rows * s.cols;
    const float* p = params + s.param_offset;   // (n)
    const float* g = grads + s.param_offset;    // (n)
    float* v = state_.data() + s.state_offset;  // (n)
    // g^2 + eps1 goes through one explicit fma so that its rounding does not depend on what the
    // compiler contracts. u here lacks grad_scale (applied below in double); at step 0 with
    // grad_scale 1 it is exactly sign(g): v is within half an ulp of g^2, so sqrt(v) rounds to
    // |g|.
    sums[2 * k] = LaneSum(n, [&](int64_t i) {
      v[i] = keep * v[i] + decay * std::fma(g2_scale * g[i], g[i], eps1);
      const float u = g[i] / std::sqrt(v[i]);
      return static_cast<double>(u) * u;
    });
    sums[2 * k + 1] = SumSquares(p, n);
  }
  if (group.reduce) model_comm_->AllReduceSum(sums, 2 * count);
  for (int64_t k = 0; k < count; ++k) {
    const Slice& s = slices_[group.first + k];
    const int64_t n = s.rows * s.cols;
    float* p = params + s.param_offset;
    const float* g = grads + s.param_offset;
    const float* v = state_.data() + s.state_offset;
    const double step = StepSize(lr, grad_scale * grad_scale * sums[2 * k], sums[2 * k + 1],
                                 s.global_rows * s.global_cols);
    const float a = static_cast<float>(step * grad_scale);
    for (int64_t i = 0; i < n; ++i) p[i] -= a * (g[i] / std::sqrt(v[i]));
  }
}

}  // namespace openmoe
