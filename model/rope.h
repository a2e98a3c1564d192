// Rotary position embedding, rotate-half form over the full head dim.
//
// For position p and i in [0, hd/2): theta_i = p * base^(-2i/hd);
//   out[i]        = x[i] cos - x[i + hd/2] sin
//   out[i + hd/2] = x[i + hd/2] cos + x[i] sin
// Positions are the absolute row index 0..seq-1, also inside packed rows.
#pragma once

#include <cstdint>
#include <vector>

namespace openmoe {

struct RopeTable {
  int64_t seq_len = 0;
  int64_t half_dim = 0;
  std::vector<float> cos;  // (seq_len, half_dim)
  std::vector<float> sin;  // (seq_len, half_dim)
};

RopeTable MakeRopeTable(int64_t seq_len, int64_t head_dim, float base);

// x: (batch * seq_len, heads, head_dim) with row stride `row_stride` floats (>= heads*head_dim),
// rotated in place. inverse = true applies the transposed rotation: the backward of the forward.
void ApplyRope(const RopeTable& table, float* x, int64_t batch, int64_t heads, int64_t row_stride,
               bool inverse);

}  // namespace openmoe
