// The experts of an MoE layer as stacked gated FFNs, and the one loop that runs them over blocks
// of rows, forward and backward. Both expert runners call it: LocalExpertRunner (model/moe.h, one
// block per expert in dispatch order) and ExpertParallelRunner (parallel/expert_parallel.h, one
// block per (source rank, local expert) in receive order). Not collective; no communication.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/ffn.h"
#include "proto/job.pb.h"

namespace openmoe {

struct MoeDims {
  int64_t tokens = 0;
  int64_t d_model = 0;
  int64_t expert_d_ff = 0;
  FfnForm form = FFN_OPENMOE;
  int64_t num_experts = 0;
  // The experts' GEMMs (the router's stay fp32). kBf16 also rounds what the experts hand back to
  // bf16 (outputs forward, input gradients backward): that is what the expert-parallel exchange
  // carries on the wire in BF16, so every layout, one process included, sees the same values.
  GemmPrecision precision = GemmPrecision::kFp32;
};

// Expert weights hold the experts this process owns (all E on one process, E_local on a rank of
// an expert-parallel mesh), stacked along the leading dim.
struct MoeWeights {
  const float* router = nullptr;  // (d, E)
  const float* wi_0 = nullptr;    // (E_local, d, Wi0Width)
  const float* wi_1 = nullptr;    // (E_local, d, F)
  const float* wo = nullptr;      // (E_local, F, d)
};

struct MoeGrads {  // accumulated into
  float* router = nullptr;
  float* wi_0 = nullptr;
  float* wi_1 = nullptr;
  float* wo = nullptr;
};

// Expert e's FFN shape and its slices of stacked weights / gradients (local index e).
FfnDims ExpertFfnDims(const MoeDims& dims, int64_t tokens);
FfnWeights ExpertFfnWeights(const MoeDims& dims, const MoeWeights& w, int64_t local_expert);
FfnGrads ExpertFfnGrads(const MoeDims& dims, const MoeGrads& g, int64_t local_expert);

// A run of rows [begin, begin + rows) of an (R, d) buffer that one local expert processes where
// it lies.
struct ExpertBlock {
  int64_t begin = 0;
  int64_t rows = 0;
  int64_t local_expert = 0;  // index into the stacked local expert weights
};

// Blocks [first, end) of a block list (all of them by default): a runner that pipelines its
// exchange runs the blocks of one chunk at a time.
struct BlockRange {
  size_t first = 0;
  size_t end = SIZE_MAX;  // clamped to the list's size
};

// x: (R, d) expert inputs; y: (R, d), each block's rows overwritten with its expert's output
// (rows in no block are left alone; kBf16: rounded to bf16). caches: resized to blocks.size(),
// block i's activations (only the range's are written). scratch: the blocks' temporaries, one
// block's at a time (null: a temporary arena).
// x may be bf16 rows in BF16 (they only feed the experts' GEMMs; GemmInput, leading dimension d).
void ExpertBlocksForward(const MoeDims& dims, const MoeWeights& w,
                         const std::vector<ExpertBlock>& blocks, GemmInput x,
                         std::vector<FfnCache>* caches, float* y, ScratchArena* scratch = nullptr,
                         BlockRange range = {});
inline void ExpertBlocksForward(const MoeDims& dims, const MoeWeights& w,
                                const std::vector<ExpertBlock>& blocks, const float* x,
                                std::vector<FfnCache>* caches, float* y,
                                ScratchArena* scratch = nullptr, BlockRange range = {}) {
  ExpertBlocksForward(dims, w, blocks, GemmInput(x, dims.d_model), caches, y, scratch, range);
}

// Backward of the last ExpertBlocksForward on the same x, blocks and caches. dy: (R, d) in;
// dx (R, d) += ..., the local experts' weight grads += ... . kBf16: each block's rows of dx are
// rounded to bf16 after the accumulation, so callers pass them zeroed (both runners do) to get
// the rounded input gradient.
void ExpertBlocksBackward(const MoeDims& dims, const MoeWeights& w, const MoeGrads& grads,
                          const std::vector<ExpertBlock>& blocks, GemmInput x,
                          const std::vector<FfnCache>& caches, const float* dy, float* dx,
                          ScratchArena* scratch = nullptr, BlockRange range = {});
inline void ExpertBlocksBackward(const MoeDims& dims, const MoeWeights& w, const MoeGrads& grads,
                                 const std::vector<ExpertBlock>& blocks, const float* x,
                                 const std::vector<FfnCache>& caches, const float* dy, float* dx,
                                 ScratchArena* scratch = nullptr, BlockRange range = {}) {
  ExpertBlocksBackward(dims, w, grads, blocks, GemmInput(x, dims.d_model), caches, dy, dx, scratch,
                       range);
}

}  // namespace openmoe
