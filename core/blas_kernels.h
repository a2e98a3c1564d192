// OpenBLAS kernels for this CPU when OpenBLAS's own detection falls back to its generic ones.
//
// Debian 12's OpenBLAS 0.3.21 picks its kernels when the library loads, from the CPU's id; a CPU
// it does not know gets "Prescott", the SSE3 kernels. Seen here: an Intel Xeon with AMX under a
// VM ran sgemm at 33 GFLOP/s on Prescott against 228 on SkylakeX, the same 2 threads, and
// bench_small's step took 19 s instead of ~3. OpenBLAS reads OPENBLAS_CORETYPE only at load
// time, before main, so EnsureBlasKernels re-executes the process with it set: SkylakeX where the
// CPU has AVX-512F, Haswell where it has AVX2 and FMA. A user's own OPENBLAS_CORETYPE is never
// overridden. Call it first thing in main, before any thread or MPI exists (under mpirun each
// rank re-executes itself alone; pid, environment and descriptors are kept).
#pragma once

#include <string>

namespace openmoe {

// Returns only when OpenBLAS runs the kernels it should (or none better is known); otherwise
// replaces the process. argv: main's, null-terminated.
void EnsureBlasKernels(char** argv);

// OpenBLAS's kernel set ("SkylakeX", "Haswell", "Prescott", ...), for run headers and benches.
std::string BlasKernels();

}  // namespace openmoe
