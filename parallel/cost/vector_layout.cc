#include "parallel/cost/vector_layout.h"

#include "core/check.h"

namespace openmoe {

double TiledElements(int64_t rows, int64_t minor) {
  OPENMOE_CHECK(rows >= 1 && minor >= 1);
  const int64_t padded_rows = (rows + kSublanes - 1) / kSublanes * kSublanes;
  const int64_t padded_minor = (minor + kLanes - 1) / kLanes * kLanes;
  return static_cast<double>(padded_rows) * static_cast<double>(padded_minor);
}

}  // namespace openmoe
