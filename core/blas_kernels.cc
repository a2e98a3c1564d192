#include "core/blas_kernels.h"

#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace openmoe {

std::string BlasKernels() {
  const char* name = openblas_get_corename();
  return name != nullptr ? name : "unknown";
}

void EnsureBlasKernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user's choice, or ours
  if (BlasKernels() != "Prescott") return;
  const char* better = __builtin_cpu_supports("avx512f")                               ? "SkylakeX"
                       : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? "Haswell"
                                                                                         : nullptr;
  if (better == nullptr) return;
  // The binary's own path (not /proc/self/exe, which would rename the process "exe").
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) return;
  path[n] = '\0';
  setenv("OPENBLAS_CORETYPE", better, /*overwrite=*/1);
  execv(path, argv);
  // exec failed: carry on with the generic kernels rather than fail.
  unsetenv("OPENBLAS_CORETYPE");
}

}  // namespace openmoe
