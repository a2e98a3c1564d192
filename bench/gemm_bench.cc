// GEMM throughput by backend: OpenBLAS sgemm, oneDNN bf16 (bf16 x bf16 -> f32, the input
// conversion from fp32 included, as Gemm(kBf16) runs it), oneDNN f32, and the bf16 fallback
// (bf16-rounded copies on sgemm), in GFLOP/s = 2 m n k / time, row-major, no transposes, beta 0.
//
//   build/bench/gemm_bench [--threads=N] [benchmark flags]      (default 2 threads)
//
// Besides wall-clock GFLOP/s it reports GFLOP per CPU-second of the whole process (all GEMM
// threads): on a machine shared with other jobs, threads x GFLOP/cpu_s estimates the idle rate.
//
// A backend this CPU lacks (oneDNN bf16 without AVX-512) is reported as an error row. Each
// problem is run once before timing so primitive creation is not measured (it is cached).
#include <time.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/blas_kernels.h"
#include "core/bf16.h"
#include "core/gemm.h"
#include "core/onednn_gemm.h"

namespace openmoe {
namespace {

enum Route : int { kSgemm, kOneDnnBf16, kOneDnnF32, kBf16RoundedSgemm };
const char* const kRouteNames[] = {"openblas_sgemm", "onednn_bf16", "onednn_f32",
                                   "bf16_rounded_sgemm"};

double ProcessCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

void BM_Gemm(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const Route route = static_cast<Route>(state.range(3));
  const GemmPrecision precision = route == kOneDnnBf16 || route == kBf16RoundedSgemm
                                      ? GemmPrecision::kBf16
                                      : GemmPrecision::kFp32;
  const GemmBackend backend =
      route == kOneDnnBf16 || route == kOneDnnF32 ? GemmBackend::kOneDnn : GemmBackend::kOpenBlas;
  state.SetLabel(kRouteNames[route]);
  if (backend == GemmBackend::kOneDnn && !OneDnnGemmAvailable(precision)) {
    state.SkipWithError("oneDNN has no matmul of this precision on this CPU");
    for (auto _ : state) {
    }
    return;
  }
  const GemmBackend saved = ActiveGemmBackend(precision);
  SetGemmBackend(precision, backend);
  std::vector<float> a(m * k), b(k * n), c(m * n);
  for (int64_t i = 0; i < m * k; ++i) a[i] = static_cast<float>((i * 37 % 101) / 50.5 - 1.0);
  for (int64_t i = 0; i < k * n; ++i) b[i] = static_cast<float>((i * 53 % 97) / 48.5 - 1.0);
  Gemm(precision, GemmOp{}, m, n, k, a.data(), b.data(), c.data());  // creates and caches
  if (backend == GemmBackend::kOneDnn)
    state.SetLabel(std::string(kRouteNames[route]) + " " +
                   OneDnnGemmImplementation(precision, GemmOp{}, m, n, k, k, n, n));
  const double cpu_start = ProcessCpuSeconds();
  for (auto _ : state) {
    Gemm(precision, GemmOp{}, m, n, k, a.data(), b.data(), c.data());
    benchmark::DoNotOptimize(c.data());
  }
  const double gflop = 2.0 * m * n * k * 1e-9;
  state.counters["GFLOP/s"] =
      benchmark::Counter(gflop, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/cpu_s"] =
      gflop * static_cast<double>(state.iterations()) / (ProcessCpuSeconds() - cpu_start);
  SetGemmBackend(precision, saved);
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (const auto& [m, n, k] :
       {std::array<int64_t, 3>{4096, 512, 512}, {4096, 2048, 512}, {2048, 2048, 2048}})
    for (const int route : {kSgemm, kOneDnnBf16, kOneDnnF32, kBf16RoundedSgemm})
      b->Args({m, n, k, route});
}
BENCHMARK(BM_Gemm)
    ->Apply(Shapes)
    ->ArgNames({"m", "n", "k", "route"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(1.0);

}  // namespace
}  // namespace openmoe

int main(int argc, char** argv) {
  openmoe::EnsureBlasKernels(argv);
  int threads = 2;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::atoi(argv[i] + 10);
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (threads < 1) {
    std::fprintf(stderr, "gemm_bench: --threads must be >= 1\n");
    return 1;
  }
  openmoe::SetGemmThreads(threads);
  benchmark::AddCustomContext("gemm_threads", std::to_string(threads));
  benchmark::AddCustomContext("avx512_bf16", openmoe::CpuHasAvx512Bf16() ? "yes" : "no");
  benchmark::AddCustomContext("bf16_gemm", openmoe::GemmPathName(openmoe::GemmPrecision::kBf16));
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
