// GradientListener: what the backward tells whoever reduces gradients. Once a range of the flat
// gradient buffer will not change again this step (the last microbatch's backward is done with
// it), the backward calls GradientsFinal with it, so its reduction can start while the backward
// goes on (parallel/grad_reducer.h). Called on the compute thread, in the backward's order.
#pragma once

#include <cstdint>

namespace openmoe {

// Rows [begin + r * row_floats, + row_floats) for r in [0, rows) of the gradient buffer, of which
// a step writes only some (an embedding's: the rows its tokens looked up); the others stay zero.
struct SparseRows {
  int64_t begin = 0, rows = 0, row_floats = 0;
  int64_t end() const { return begin + rows * row_floats; }
};

class GradientListener {
 public:
  virtual ~GradientListener() = default;
  // grads[offset, offset + size) is final.
  virtual void GradientsFinal(int64_t offset, int64_t size) = 0;
};

}  // namespace openmoe
