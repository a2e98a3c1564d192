// A full training step (forward, backward, Adafactor) of launch/configs/bench_small.pbtxt, reported
// as tokens/s and as model FLOP/s relative to this machine's OpenBLAS sgemm peak, measured by this
// same binary in the same run.
//
//   build/bench/train_step_bench [--threads=N] [--set=field.path=value ...] [benchmark flags]
//   mpirun -np 2 build/bench/train_step_bench --threads=1 --set=mesh.expert_parallel=2
//
// Under mpirun every rank runs the step (it is collective) and rank 0 reports; tokens/s is the
// whole mesh's.
// Model FLOPs per step = tokens * (6 * N + 12 * L * H * hd * S) with N the activated matmul
// parameters (model/param_count.h documents the formula). The sgemm peak is the best of square
// 2048 and 4096 sgemm (median of 5 calls each) at the same thread count, summed over ranks.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <mpi.h>

#include "benchmark/benchmark.h"
#include "core/check.h"
#include "core/gemm.h"
#include "core/tensor.h"
#include "core/timer.h"
#include "launch/job_loader.h"
#include "launch/trainer.h"
#include "model/param_count.h"
#include "parallel/communicator.h"

namespace openmoe {
namespace {

double g_sgemm_peak = 0;  // FLOP/s, measured before the benchmarks run
std::vector<std::string> g_sets;  // --set overrides of bench_small
std::unique_ptr<Communicator> g_world;

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
BENCHMARK(BM_SgemmSquare)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0);

void BM_TrainStepBenchSmall(benchmark::State& state) {
  const std::string job = std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/bench_small.pbtxt";
  absl::StatusOr<JobSpec> spec = LoadJob({job}, g_sets);
  OPENMOE_CHECK_MSG(spec.ok(), "%s", std::string(spec.status().message()).c_str());
  auto created = Trainer::Create(*spec, g_world.get());
  OPENMOE_CHECK_MSG(created.ok(), "%s", std::string(created.status().message()).c_str());
  std::unique_ptr<Trainer> trainer = std::move(created).value();
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

// Ranks other than 0 run the (collective) benchmark silently.
class QuietReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace openmoe

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  openmoe::g_world = openmoe::MakeWorldCommunicator();
  const bool rank0 = openmoe::g_world->rank() == 0;
  int threads = 2;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::atoi(argv[i] + 10);
    } else if (std::strncmp(argv[i], "--set=", 6) == 0) {
      openmoe::g_sets.push_back(argv[i] + 6);
    } else {
      rest.push_back(argv[i]);
    }
  }
  int rest_argc = static_cast<int>(rest.size());
  openmoe::SetGemmThreads(threads);
  // Each rank measures at once (they share the machine's cores); the mesh's peak is the sum.
  openmoe::g_sgemm_peak = std::max(openmoe::SgemmFlopsPerSecond(2048, 5),
                                   openmoe::SgemmFlopsPerSecond(4096, 5));
  openmoe::g_world->AllReduceSum(&openmoe::g_sgemm_peak, 1);
  benchmark::AddCustomContext("openblas_threads", std::to_string(threads));
  benchmark::AddCustomContext("sgemm_peak_gflops", std::to_string(openmoe::g_sgemm_peak / 1e9));
  benchmark::AddCustomContext("mpi_ranks", std::to_string(openmoe::g_world->size()));
  benchmark::Initialize(&rest_argc, rest.data());
  if (openmoe::g_world->size() > 1) {
    // Only the collective step benchmark makes sense on several ranks (sgemm runs per rank).
    benchmark::SetBenchmarkFilter("BM_TrainStep");
  }
  if (rank0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    openmoe::QuietReporter quiet;
    benchmark::RunSpecifiedBenchmarks(&quiet);
  }
  benchmark::Shutdown();
  openmoe::g_world.reset();
  MPI_Finalize();
  return 0;
}
