#include "core/allocator.h"

#include <malloc.h>

namespace openmoe {

void ReturnLargeFreesToTheSystem() { mallopt(M_MMAP_THRESHOLD, 256 * 1024); }

}  // namespace openmoe
