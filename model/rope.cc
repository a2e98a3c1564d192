#include "model/rope.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/parallel_for.h"

namespace openmoe {

RopeTable MakeRopeTable(int64_t seq_len, int64_t head_dim, float base) {
  OPENMOE_CHECK_MSG(head_dim % 2 == 0, "rotate-half RoPE needs an even head_dim, got %lld",
                    static_cast<long long>(head_dim));
  RopeTable table;
  table.seq_len = seq_len;
  table.half_dim = head_dim / 2;
  table.cos.resize(seq_len * table.half_dim);
  table.sin.resize(seq_len * table.half_dim);
  // Angles in double: p * inv_freq reaches ~seq_len radians, where fp32 would lose ~1e-4.
  for (int64_t p = 0; p < seq_len; ++p) {
    for (int64_t i = 0; i < table.half_dim; ++i) {
      const double inv_freq = std::pow(static_cast<double>(base), -2.0 * i / head_dim);
      const double angle = static_cast<double>(p) * inv_freq;
      table.cos[p * table.half_dim + i] = static_cast<float>(std::cos(angle));
      table.sin[p * table.half_dim + i] = static_cast<float>(std::sin(angle));
    }
  }
  return table;
}

void ApplyRope(const RopeTable& table, float* x, int64_t batch, int64_t heads, int64_t row_stride,
               bool inverse) {
  const int64_t s_len = table.seq_len, half = table.half_dim;
  OPENMOE_CHECK(row_stride >= heads * 2 * half);
  // The inverse (transposed) rotation is the rotation by -theta: flip the sign of sin.
  const float sign = inverse ? -1.0f : 1.0f;
  const int64_t min_rows = std::max<int64_t>(1, 16384 / std::max<int64_t>(row_stride, 1));
  ParallelFor(batch * s_len, min_rows, [&](int64_t begin, int64_t end) {
    for (int64_t token = begin; token < end; ++token) {
      const int64_t p = token % s_len;
      const float* c = table.cos.data() + p * half;
      const float* s = table.sin.data() + p * half;
      float* row = x + token * row_stride;
      for (int64_t h = 0; h < heads; ++h) {
        float* lo = row + h * 2 * half;
        float* hi = lo + half;
        for (int64_t i = 0; i < half; ++i) {
          const float a = lo[i], bb = hi[i], sn = sign * s[i];
          lo[i] = a * c[i] - bb * sn;
          hi[i] = bb * c[i] + a * sn;
        }
      }
    }
  });
}

}  // namespace openmoe
