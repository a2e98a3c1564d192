#include "model/adafactor.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/kernels.h"

namespace openmoe {

Adafactor::Adafactor(const AdafactorConfig& config, const ParamLayout& layout)
    : config_(config), total_size_(layout.total_size()) {
  int64_t state_size = 0, max_factored_cols = 0;
  for (const ParamInfo& p : layout.params()) {
    // An expert tensor (E, r, c) is E parameters of their own, so that nothing (factors, clipping,
    // parameter scale) depends on how experts are sharded.
    const int64_t count = p.is_expert ? p.shape[0] : 1;
    const int matrix_rank = static_cast<int>(p.shape.size()) - (p.is_expert ? 1 : 0);
    OPENMOE_CHECK_MSG(matrix_rank == 1 || matrix_rank == 2,
                      "%s: Adafactor takes vectors and matrices (per expert), got rank %d",
                      p.name.c_str(), matrix_rank);
    const int64_t rows = matrix_rank == 2 ? p.shape[p.shape.size() - 2] : 1;
    const int64_t cols = p.shape.back();
    const int64_t min_dim = config.min_dim_size_to_factor();
    const bool factored =
        config.factored() && matrix_rank == 2 && rows >= min_dim && cols >= min_dim;
    for (int64_t e = 0; e < count; ++e) {
      slices_.push_back({.param_offset = p.offset + e * rows * cols,
                         .rows = rows,
                         .cols = cols,
                         .factored = factored,
                         .state_offset = state_size});
      state_size += factored ? rows + cols : rows * cols;
    }
    if (factored) max_factored_cols = std::max(max_factored_cols, cols);
  }
  state_.Resize({state_size});
  col_sum_.resize(max_factored_cols);
  col_factor_.resize(max_factored_cols);
}

void Adafactor::Update(int64_t step, double learning_rate, float* params, const float* grads,
                       double global_grad_norm) {
  OPENMOE_CHECK(step >= 0);
  const double beta2 = 1.0 - std::pow(static_cast<double>(step) + 1.0, -config_.decay_exponent());
  // Global-norm clipping multiplies every gradient by one factor. grads is const (and large), so
  // the factor is folded into each slice's arithmetic instead of being applied to a copy.
  const double grad_scale =
      GlobalNormClipScale(config_.global_norm_clip(), global_grad_norm, grads, total_size_);
  for (const Slice& s : slices_) {
    if (s.factored) {
      UpdateFactored(s, beta2, grad_scale, learning_rate, params, grads);
    } else {
      UpdateUnfactored(s, beta2, grad_scale, learning_rate, params, grads);
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

// Three passes over the slice: g^2 statistics; the update's sum of squares; the update itself.
// u is never stored: it is the outer product of the factors times g, recomputed when needed.
void Adafactor::UpdateFactored(const Slice& s, double beta2, double grad_scale, double lr,
                               float* params, const float* grads) {
  const int64_t rows = s.rows, cols = s.cols;
  float* p = params + s.param_offset;             // (rows, cols)
  const float* g = grads + s.param_offset;        // (rows, cols)
  float* v_row = state_.data() + s.state_offset;  // (rows)
  float* v_col = v_row + rows;                    // (cols)
  double* col_sum = col_sum_.data();              // (cols)
  float* col_factor = col_factor_.data();         // (cols)
  const double decay = 1.0 - beta2, g2_scale = grad_scale * grad_scale;
  const double eps1 = config_.epsilon1();

  // mean(g^2 + eps1) = mean(g^2) + eps1, so epsilon1 is added to the means, not to every element.
  std::fill_n(col_sum, cols, 0.0);
  double v_row_total = 0.0;
  for (int64_t i = 0; i < rows; ++i) {
    const float* gi = g + i * cols;
    const double row_sum = LaneSum(cols, [&](int64_t j) {
      const double sq = static_cast<double>(gi[j]) * gi[j];
      col_sum[j] += sq;
      return sq;
    });
    v_row[i] = static_cast<float>(beta2 * v_row[i] + decay * (g2_scale * row_sum / cols + eps1));
    v_row_total += v_row[i];
  }
  for (int64_t j = 0; j < cols; ++j) {
    v_col[j] = static_cast<float>(beta2 * v_col[j] + decay * (g2_scale * col_sum[j] / rows + eps1));
    col_factor[j] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(v_col[j])));
  }
  // u[i, j] = grad_scale * g[i, j] * row_factor(i) * col_factor[j]; grad_scale rides on the row.
  const double v_row_mean = v_row_total / rows;
  auto row_factor = [&](int64_t i) { return grad_scale / std::sqrt(v_row[i] / v_row_mean); };

  double u_sum_squares = 0.0;
  for (int64_t i = 0; i < rows; ++i) {
    const float* gi = g + i * cols;
    const double rf = row_factor(i);
    u_sum_squares += rf * rf * LaneSum(cols, [&](int64_t j) {
                       const double x = gi[j] * col_factor[j];
                       return x * x;
                     });
  }
  const double step = StepSize(lr, u_sum_squares, SumSquares(p, rows * cols), rows * cols);

  for (int64_t i = 0; i < rows; ++i) {
    const float a = static_cast<float>(step * row_factor(i));
    const float* gi = g + i * cols;
    float* pi = p + i * cols;
    for (int64_t j = 0; j < cols; ++j) pi[j] -= a * (gi[j] * col_factor[j]);
  }
}

// Two passes: the moving average with the update's sum of squares, then the update, recomputing
// u = g / sqrt(v) from the new v instead of storing it. std::sqrt keeps these loops scalar (errno,
// without -fno-math-errno); that is ~3x the factored path's time per element, acceptable because
// unfactored tensors are the small ones (norm scales, routers).
void Adafactor::UpdateUnfactored(const Slice& s, double beta2, double grad_scale, double lr,
                                 float* params, const float* grads) {
  const int64_t n = s.rows * s.cols;
  float* p = params + s.param_offset;         // (n)
  const float* g = grads + s.param_offset;    // (n)
  float* v = state_.data() + s.state_offset;  // (n)
  const float keep = static_cast<float>(beta2), decay = static_cast<float>(1.0 - beta2);
  const float g2_scale = static_cast<float>(grad_scale * grad_scale);
  const float eps1 = static_cast<float>(config_.epsilon1());

  // g^2 + eps1 goes through one explicit fma so that its rounding does not depend on what the
  // compiler contracts. u here lacks grad_scale (applied below in double); at step 0 with
  // grad_scale 1 it is exactly sign(g): v is within half an ulp of g^2, so sqrt(v) rounds to |g|.
  const double u_sum_squares = LaneSum(n, [&](int64_t i) {
    v[i] = keep * v[i] + decay * std::fma(g2_scale * g[i], g[i], eps1);
    const float u = g[i] / std::sqrt(v[i]);
    return static_cast<double>(u) * u;
  });
  const double step = StepSize(lr, grad_scale * grad_scale * u_sum_squares, SumSquares(p, n), n);

  const float a = static_cast<float>(step * grad_scale);
  for (int64_t i = 0; i < n; ++i) p[i] -= a * (g[i] / std::sqrt(v[i]));
}

}  // namespace openmoe
