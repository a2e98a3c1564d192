#include "parallel/cost/mxu_tiles.h"

#include "core/check.h"

namespace openmoe {
namespace {

double Filled(int64_t x) {
  const int64_t tiles = (x + kMxuTile - 1) / kMxuTile;
  return static_cast<double>(x) / static_cast<double>(tiles * kMxuTile);
}

}  // namespace

double MxuUtilisation(int64_t k, int64_t n) {
  OPENMOE_CHECK(k >= 1 && n >= 1);
  return Filled(k) * Filled(n);
}

double MxuWeightPaddingFlopsPerToken(const ParamLayout& piece) {
  const ModelDims& whole = piece.dims();
  double extra = 0;
  for (const ParamInfo& p : piece.params()) {
    if (p.component == Component::kEmbedding || p.component == Component::kNorm) continue;
    if (p.is_expert) {
      OPENMOE_CHECK(p.shape.size() == 3);
      const double flops = 6.0 * static_cast<double>(whole.top_k) *
                           static_cast<double>(p.shape[1]) * static_cast<double>(p.shape[2]);
      extra += flops * (1 / MxuUtilisation(p.shape[1], p.shape[2]) - 1);
    } else if (p.shape.size() == 2) {
      const double flops = 6.0 * static_cast<double>(p.shape[0]) * static_cast<double>(p.shape[1]);
      extra += flops * (1 / MxuUtilisation(p.shape[0], p.shape[1]) - 1);
    }
  }
  return extra;
}

double AttentionMxuUtilisation(const ModelDims& dims, int64_t seq_len) {
  return MxuUtilisation(dims.head_dim, seq_len);
}

}  // namespace openmoe
