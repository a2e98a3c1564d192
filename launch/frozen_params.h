// FrozenParams: parameters that an optimizer step must leave alone (router freezing), whatever the
// optimizer. Before the update the trainer saves their values and their optimizer statistics;
// after it, puts both back, so a frozen tensor and its Adafactor / AdamW state are bit for bit
// what they were (AdamW's weight decay and moment decay included). Their gradients are zeroed
// before the global norm, so neither the reported norm nor global-norm clipping counts them.
//
// Shared (non-expert) tensors only; not collective (every rank holds the same shared values).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/optimizer.h"
#include "model/params.h"

namespace openmoe {

class FrozenParams {
 public:
  // names: shared parameters of `layout` (aborts on an unknown or expert tensor).
  FrozenParams(const ParamLayout& layout, const Optimizer& optimizer,
               const std::vector<std::string>& names);

  void ZeroGrads(float* grads) const;
  // Save before Optimizer::Update, Restore after it, on the same buffers.
  void Save(const float* params, const Tensor& state);
  void Restore(float* params, Tensor& state) const;

  // [offset, size) runs of the parameter buffer and of the optimizer state that are frozen.
  const std::vector<std::pair<int64_t, int64_t>>& param_ranges() const { return param_ranges_; }
  const std::vector<std::pair<int64_t, int64_t>>& state_ranges() const { return state_ranges_; }

 private:
  std::vector<std::pair<int64_t, int64_t>> param_ranges_, state_ranges_;
  std::vector<float> saved_params_, saved_state_;
};

}  // namespace openmoe
