// What the TPU's matrix units lose when a matmul's dimensions do not fill their tiles. A v3
// TensorCore's MXU is a 128 x 128 systolic array (Jouppi et al., CACM 2020; Norrie et al., IEEE
// Micro 2021): a matmul [M, K] x [K, N] runs as ceil(K / 128) x ceil(N / 128) weight tiles, each
// taking the same time whether its 128 x 128 cells hold data or padding, with the M rows streamed
// through. Its utilisation is therefore
//   u(K, N) = K / (128 ceil(K / 128))  x  N / (128 ceil(N / 128))
// (M, the tokens, is in the thousands here and not padded noticeably). The backward's two matmuls
// (dX = dY W^T, dW = X^T dY) have the same pair of weight dims, so u holds for all three.
//
// Per token of a shard, on one chip (its piece of the model-split parameters, the layout's shapes),
// the extra FLOPs the padding costs the weight matmuls, at the same rate as real ones: each weight
// matrix [K, N] of a matmul component (not the embedding lookup, not the norm scales; experts
// (E, K, N) at top_k of their E) adds 6 K N (1 / u(K, N) - 1). The attention's own matmuls (score
// Q K^T: contracts head_dim into S outputs; context P V: contracts S into head_dim outputs) run at
// u(hd, S) = hd / pad(hd) x S / pad(S); the cost model takes their time as the longer of that and
// their operands' HBM traffic (cost_model.h, hbm_traffic.h).
// Example: head_dim 64 gives the attention matmuls half the array (u = 0.5); d_model 768, d_ff 2048
// or a 32128 vocabulary fill every tile (u = 1).
#pragma once

#include <cstdint>

#include "model/params.h"

namespace openmoe {

inline constexpr int64_t kMxuTile = 128;

// u(k, n) above; k, n >= 1.
double MxuUtilisation(int64_t k, int64_t n);

// The weight matmuls' padding: extra training FLOPs per token (forward + backward) on a chip
// holding `piece` (whose dims() are the whole model's and local_dims() the chip's).
double MxuWeightPaddingFlopsPerToken(const ParamLayout& piece);

// u(head_dim, seq_len): the attention score and context matmuls' utilisation.
double AttentionMxuUtilisation(const ModelDims& dims, int64_t seq_len);

}  // namespace openmoe
