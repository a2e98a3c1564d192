// GradientListener: what the backward tells whoever reduces gradients. Once a range of the flat
// gradient buffer will not change again this step (the last microbatch's backward is done with
// it), the backward calls GradientsFinal with it, so its reduction can start while the backward
// goes on (parallel/grad_reducer.h). Called on the compute thread, in the backward's order.
#pragma once

#include <cstdint>

namespace openmoe {

class GradientListener {
 public:
  virtual ~GradientListener() = default;
  // grads[offset, offset + size) is final.
  virtual void GradientsFinal(int64_t offset, int64_t size) = 0;
};

}  // namespace openmoe
