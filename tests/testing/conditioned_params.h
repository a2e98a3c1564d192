// Parameters of a small decoder conditioned for tests that compare routing decisions: router
// kernels scaled up so that top-2 margins dwarf rounding (or a finite-difference step), the
// embedding scaled down so that activations stay O(1).
#pragma once

#include <vector>

#include "model/params.h"

namespace openmoe::testing {

inline void ConditionForRoutingTests(const ParamLayout& layout, float router_scale,
                                     std::vector<float>* params) {
  for (const ParamInfo& p : layout.params()) {
    for (int64_t i = 0; i < p.size; ++i) {
      if (p.component == Component::kRouter) (*params)[p.offset + i] *= router_scale;
      if (p.component == Component::kEmbedding) (*params)[p.offset + i] *= 0.5f;
    }
  }
}

}  // namespace openmoe::testing
