#include "model/expert_ffn.h"

#include <algorithm>

#include "core/bf16.h"
#include "core/check.h"

namespace openmoe {

FfnDims ExpertFfnDims(const MoeDims& dims, int64_t tokens) {
  return {.tokens = tokens,
          .d_model = dims.d_model,
          .d_ff = dims.expert_d_ff,
          .form = dims.form,
          .precision = dims.precision};
}

// Expert e's slices of the stacked weights (E_local, d, Wi0Width), (E_local, d, F), (E_local, F, d).
FfnWeights ExpertFfnWeights(const MoeDims& dims, const MoeWeights& w, int64_t e) {
  const FfnDims f = ExpertFfnDims(dims, 0);
  const int64_t d = dims.d_model, ff = dims.expert_d_ff;
  return {
      .wi_0 = w.wi_0 + e * d * f.Wi0Width(), .wi_1 = w.wi_1 + e * d * ff, .wo = w.wo + e * ff * d};
}

FfnGrads ExpertFfnGrads(const MoeDims& dims, const MoeGrads& g, int64_t e) {
  const FfnDims f = ExpertFfnDims(dims, 0);
  const int64_t d = dims.d_model, ff = dims.expert_d_ff;
  return {
      .wi_0 = g.wi_0 + e * d * f.Wi0Width(), .wi_1 = g.wi_1 + e * d * ff, .wo = g.wo + e * ff * d};
}

void ExpertBlocksForward(const MoeDims& dims, const MoeWeights& w,
                         const std::vector<ExpertBlock>& blocks, GemmInput x,
                         std::vector<FfnCache>* caches, float* y, ScratchArena* scratch,
                         BlockRange range) {
  const int64_t d = dims.d_model;
  caches->resize(blocks.size());
  for (size_t i = range.first; i < std::min(range.end, blocks.size()); ++i) {
    const ExpertBlock& b = blocks[i];
    FfnForward(ExpertFfnDims(dims, b.rows), ExpertFfnWeights(dims, w, b.local_expert),
               x.FromRow(b.begin), &(*caches)[i], y + b.begin * d, /*accumulate=*/false, scratch);
    if (dims.precision == GemmPrecision::kBf16) {
      RoundToBf16(y + b.begin * d, y + b.begin * d, b.rows * d);
    }
  }
}

void ExpertBlocksBackward(const MoeDims& dims, const MoeWeights& w, const MoeGrads& grads,
                          const std::vector<ExpertBlock>& blocks, GemmInput x,
                          const std::vector<FfnCache>& caches, const float* dy, float* dx,
                          ScratchArena* scratch, BlockRange range) {
  const int64_t d = dims.d_model;
  OPENMOE_CHECK_MSG(caches.size() == blocks.size(), "backward without its forward");
  for (size_t i = range.first; i < std::min(range.end, blocks.size()); ++i) {
    const ExpertBlock& b = blocks[i];
    FfnBackward(ExpertFfnDims(dims, b.rows), ExpertFfnWeights(dims, w, b.local_expert),
                x.FromRow(b.begin), &caches[i], dy + b.begin * d,
                ExpertFfnGrads(dims, grads, b.local_expert), dx + b.begin * d, scratch);
    if (dims.precision == GemmPrecision::kBf16) {
      RoundToBf16(dx + b.begin * d, dx + b.begin * d, b.rows * d);
    }
  }
}

}  // namespace openmoe
