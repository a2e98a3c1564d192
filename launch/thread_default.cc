#include "launch/thread_default.h"

#include <algorithm>

namespace openmoe {

int DefaultGemmThreads(const JobSpec& spec, int cores_for_this_rank) {
  if (spec.model().d_model() < kMinDModelForThreads) return 1;
  return std::max(1, cores_for_this_rank);
}

}  // namespace openmoe
