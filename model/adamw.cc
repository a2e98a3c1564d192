#include "model/adamw.h"

#include <cmath>

#include "core/check.h"

namespace openmoe {

AdamW::AdamW(const AdamWConfig& config, double global_norm_clip, const ParamLayout& layout)
    : config_(config), global_norm_clip_(global_norm_clip), total_size_(layout.total_size()) {
  for (const ParamInfo& p : layout.params()) {
    const int matrix_rank = static_cast<int>(p.shape.size()) - (p.is_expert ? 1 : 0);
    ranges_.push_back({.offset = p.offset, .size = p.size, .decay = matrix_rank >= 2});
  }
  state_.Resize({2 * total_size_});  // zero: the moments start at 0
}

void AdamW::Update(int64_t step, double learning_rate, float* params, const float* grads,
                   double global_grad_norm) {
  OPENMOE_CHECK(step >= 0);
  const double b1 = config_.beta1(), b2 = config_.beta2();
  const double t = static_cast<double>(step) + 1.0;
  // Bias corrections folded into two per-step constants:
  //   m_hat / (sqrt(v_hat) + eps) = (m / c1) / (sqrt(v) / sqrt(c2) + eps).
  const float inv_c1 = static_cast<float>(1.0 / (1.0 - std::pow(b1, t)));
  const float inv_sqrt_c2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(b2, t)));
  const float g_scale = static_cast<float>(
      GlobalNormClipScale(global_norm_clip_, global_grad_norm, grads, total_size_));
  const float keep1 = static_cast<float>(b1), decay1 = static_cast<float>(1.0 - b1);
  const float keep2 = static_cast<float>(b2), decay2 = static_cast<float>(1.0 - b2);
  const float eps = static_cast<float>(config_.epsilon());
  const float lr = static_cast<float>(learning_rate);
  float* m = state_.data();
  float* v = state_.data() + total_size_;
  for (const Range& r : ranges_) {
    const float wd = r.decay ? static_cast<float>(learning_rate * config_.weight_decay()) : 0.0f;
    for (int64_t i = r.offset; i < r.offset + r.size; ++i) {
      const float g = g_scale * grads[i];
      m[i] = keep1 * m[i] + decay1 * g;
      v[i] = keep2 * v[i] + decay2 * (g * g);
      const float update = (m[i] * inv_c1) / (std::sqrt(v[i]) * inv_sqrt_c2 + eps);
      params[i] -= lr * update + wd * params[i];
    }
  }
}

}  // namespace openmoe
