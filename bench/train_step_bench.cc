// A full training step (forward, backward, Adafactor) of launch/configs/bench_small.pbtxt, reported
// as tokens/s and as model FLOP/s relative to this machine's OpenBLAS sgemm peak, measured by this
// same binary in the same run.
//
//   build/bench/train_step_bench [--threads=N] [google benchmark flags]
//
// Model FLOPs per step = tokens * (6 * N + 12 * L * H * hd * S) with N the activated matmul
// parameters (model/param_count.h documents the formula). The sgemm peak is the best of square
// 2048 and 4096 sgemm (median of 5 calls each) at the same thread count.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/check.h"
#include "core/gemm.h"
#include "core/tensor.h"
#include "core/timer.h"
#include "launch/job_loader.h"
#include "launch/trainer.h"
#include "model/param_count.h"

namespace openmoe {
namespace {

double g_sgemm_peak = 0;  // FLOP/s, measured before the benchmarks run

double SgemmFlopsPerSecond(int64_t n, int repeats) {
  Tensor a({n, n}), b({n, n}), c({n, n});
  for (int64_t i = 0; i < n * n; ++i) a[i] = b[i] = 1e-3f * static_cast<float>(i % 97);
  Gemm({}, n, n, n, a.data(), b.data(), c.data());  // warm-up
  std::vector<double> rates;
  for (int r = 0; r < repeats; ++r) {
    Timer t;
    Gemm({}, n, n, n, a.data(), b.data(), c.data());
    rates.push_back(2.0 * n * n * n / t.Seconds());
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

void BM_SgemmSquare(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a({n, n}), b({n, n}), c({n, n});
  for (auto _ : state) Gemm({}, n, n, n, a.data(), b.data(), c.data());
  state.counters["flops_per_second"] =
      benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_SgemmSquare)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_TrainStepBenchSmall(benchmark::State& state) {
  const std::string job = std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/bench_small.pbtxt";
  absl::StatusOr<JobSpec> spec = LoadJob({job}, {});
  OPENMOE_CHECK_MSG(spec.ok(), "%s", std::string(spec.status().message()).c_str());
  std::unique_ptr<Trainer> trainer = Trainer::Create(*spec).value();
  trainer->Step();  // warm-up: first-touch allocation of every activation buffer
  const int64_t tokens = spec->train().batch_rows() * spec->train().seq_len();
  const double flops_per_token =
      TrainingFlopsPerToken(trainer->layout(), spec->train().seq_len()).total;
  double seconds = 0;
  int64_t steps = 0;
  for (auto _ : state) {
    const StepResult r = trainer->Step();
    seconds += r.seconds;
    ++steps;
  }
  const double tokens_per_second = tokens * steps / seconds;
  state.counters["tokens_per_second"] = tokens_per_second;
  state.counters["model_flops_per_second"] = tokens_per_second * flops_per_token;
  state.counters["sgemm_peak_flops_per_second"] = g_sgemm_peak;
  state.counters["fraction_of_sgemm_peak"] = tokens_per_second * flops_per_token / g_sgemm_peak;
}
BENCHMARK(BM_TrainStepBenchSmall)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(5);

}  // namespace
}  // namespace openmoe

int main(int argc, char** argv) {
  int threads = 2;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::atoi(argv[i] + 10);
    } else {
      rest.push_back(argv[i]);
    }
  }
  int rest_argc = static_cast<int>(rest.size());
  openmoe::SetGemmThreads(threads);
  openmoe::g_sgemm_peak = std::max(openmoe::SgemmFlopsPerSecond(2048, 5),
                                   openmoe::SgemmFlopsPerSecond(4096, 5));
  benchmark::AddCustomContext("openblas_threads", std::to_string(threads));
  benchmark::AddCustomContext("sgemm_peak_gflops", std::to_string(openmoe::g_sgemm_peak / 1e9));
  benchmark::Initialize(&rest_argc, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
