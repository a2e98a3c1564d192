#include "launch/frozen_params.h"

#include <algorithm>

#include "core/check.h"
#include "model/adafactor.h"

namespace openmoe {

namespace {

// Where a shared parameter's statistics sit in the optimizer's state: AdamW keeps m and v in the
// parameter layout (m at [0, n), v at [n, 2n)); Adafactor one slice per matrix, found by offset.
std::vector<std::pair<int64_t, int64_t>> StateRanges(const ParamLayout& layout,
                                                     const Optimizer& optimizer,
                                                     const ParamInfo& p) {
  if (optimizer.kind() == OPTIMIZER_ADAMW) {
    return {{p.offset, p.size}, {layout.total_size() + p.offset, p.size}};
  }
  const auto* adafactor = dynamic_cast<const Adafactor*>(&optimizer);
  OPENMOE_CHECK(adafactor != nullptr);
  for (const Adafactor::Slice& s : adafactor->slices()) {
    if (s.param_offset != p.offset) continue;
    return {{s.state_offset, s.factored ? s.rows + s.cols : s.rows * s.cols}};
  }
  OPENMOE_CHECK_MSG(false, "no adafactor slice for %s", p.name.c_str());
  return {};
}

}  // namespace

FrozenParams::FrozenParams(const ParamLayout& layout, const Optimizer& optimizer,
                           const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    const ParamInfo& p = layout.Get(name);
    OPENMOE_CHECK_MSG(!p.is_expert, "cannot freeze expert tensor %s", name.c_str());
    param_ranges_.push_back({p.offset, p.size});
    for (const auto& r : StateRanges(layout, optimizer, p)) state_ranges_.push_back(r);
  }
}

void FrozenParams::ZeroGrads(float* grads) const {
  for (const auto& [offset, size] : param_ranges_) std::fill_n(grads + offset, size, 0.0f);
}

void FrozenParams::Save(const float* params, const Tensor& state) {
  saved_params_.clear();
  saved_state_.clear();
  for (const auto& [offset, size] : param_ranges_)
    saved_params_.insert(saved_params_.end(), params + offset, params + offset + size);
  for (const auto& [offset, size] : state_ranges_)
    saved_state_.insert(saved_state_.end(), state.data() + offset, state.data() + offset + size);
}

void FrozenParams::Restore(float* params, Tensor& state) const {
  size_t at = 0;
  for (const auto& [offset, size] : param_ranges_) {
    std::copy_n(saved_params_.data() + at, size, params + offset);
    at += size;
  }
  at = 0;
  for (const auto& [offset, size] : state_ranges_) {
    std::copy_n(saved_state_.data() + at, size, state.data() + offset);
    at += size;
  }
}

}  // namespace openmoe
