// Causal multi-head self-attention with RoPE and segment masking (OpenMoE form).
//
// No biases, no GQA, and no runtime 1/sqrt(head_dim): that factor is folded into wq's
// initialisation. Query i may attend to key j iff j <= i and segment[i] == segment[j] (the
// diagonal is always allowed, so padding rows with segment 0 stay finite).
//
// Blocked (FlashAttention-2 form): the forward runs an online softmax over key tiles and keeps,
// besides q, k, v and the context, only each query's log-sum-exp (B, H, S); the backward
// recomputes each probability tile from q, k and it. Scratch is two tiles per thread, so memory is
// linear in S (bench_small: 128 KiB of log-sum-exp per layer instead of 32 MiB of probabilities).
#pragma once

#include <cstdint>
#include <vector>

#include "core/gemm.h"
#include "core/scratch_arena.h"
#include "core/tensor.h"
#include "model/attention_tiles.h"
#include "model/rope.h"

namespace openmoe {

struct AttentionDims {
  int64_t batch = 0;  // rows
  int64_t seq_len = 0;
  int64_t d_model = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;
  // Every GEMM here, forward and backward: the projections and the per-tile QK^T, P V and their
  // gradients. The softmax (running max and sum, the recomputed P) and its backward
  // dS = P * (dP - D) stay fp32; D = rowsum(dO * O) reads O and dO as held, bf16-rounded in BF16
  // (they only feed GEMMs otherwise).
  GemmPrecision precision = GemmPrecision::kFp32;
};

struct AttentionWeights {
  const float* wq = nullptr;  // (d_model, H*hd)
  const float* wk = nullptr;  // (d_model, H*hd)
  const float* wv = nullptr;  // (d_model, H*hd)
  const float* wo = nullptr;  // (H*hd, d_model)
};

struct AttentionGrads {  // accumulated into
  float* wq = nullptr;
  float* wk = nullptr;
  float* wv = nullptr;
  float* wo = nullptr;
};

// What the forward keeps for the backward. Owned by the caller, reused across steps (buffers are
// resized, not reallocated, when shapes repeat). The softmax is not kept: the backward recomputes
// it tile by tile from q, k and the log-sum-exp. q, k, v and the context only feed GEMMs, so BF16
// keeps them as bf16 (half the bytes, the same values its GEMMs would round them to) and FP32 as
// floats: exactly one of q / q16 (k, v, context alike) holds data.
struct AttentionCache {
  Tensor q;          // (B*S, H*hd) after RoPE; FP32 only
  Tensor k;          // (B*S, H*hd) after RoPE; FP32 only
  Tensor v;          // (B*S, H*hd); FP32 only
  Tensor context;    // (B*S, H*hd) softmax @ v, before wo; FP32 only
  std::vector<uint16_t> q16, k16, v16, context16;  // the same in BF16, bf16-rounded
  Tensor lse;        // (B, H, S) log sum_j exp(score_ij) over the keys query i sees
  std::vector<int64_t> segment_starts;  // (B, S) first position of each query's segment

  // Bytes held (capacity) by the tensors above.
  int64_t CapacityBytes() const;
};

// Floats of scratch the forward / backward take (released on return): per worker thread two tiles,
// three row vectors and, in BF16, the head's packed operands (HeadTiles::StorageWords) and its
// q, k, v and context widened to fp32 (4 x S x hd); in the backward also d context, dq, dk, dv
// (4 x B*S x H*hd); in the BF16 forward q, k, v, context in fp32 before they are kept as bf16
// (4 x B*S x H*hd).
int64_t AttentionForwardScratchFloats(const AttentionDims& dims);
int64_t AttentionBackwardScratchFloats(const AttentionDims& dims);
// The same for a given number of worker threads (the two above use the GEMM threads' count).
int64_t AttentionScratchFloats(const AttentionDims& dims, bool backward, int64_t workers);

// x: (B*S, d) normalised input; segment_ids: (B, S); y: (B*S, d), overwritten. scratch: the
// tiles (null: a temporary arena).
void AttentionForward(const AttentionDims& dims, const RopeTable& rope, const AttentionWeights& w,
                      const float* x, const int32_t* segment_ids, AttentionCache* cache, float* y,
                      ScratchArena* scratch = nullptr);

// dy: (B*S, d). dx (B*S, d) += ..., grads += ... . The cache must hold this x's forward.
// scratch: the tiles and the four gradients of the heads' inputs (null: a temporary arena).
void AttentionBackward(const AttentionDims& dims, const RopeTable& rope, const AttentionWeights& w,
                       const float* x, const int32_t* segment_ids, const AttentionCache* cache,
                       const float* dy, const AttentionGrads& grads, float* dx,
                       ScratchArena* scratch = nullptr);

// For tests and analysis: the softmax of row b, head h, (S, S) into probs, recomputed from the
// cache exactly as the backward does (masked entries exactly 0). The cache must hold a forward.
void AttentionProbabilities(const AttentionDims& dims, const AttentionCache& cache,
                            const int32_t* segment_ids, int64_t b, int64_t h, float* probs);

}  // namespace openmoe
