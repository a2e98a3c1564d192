// A full training step (forward, backward, Adafactor) of launch/configs/bench_small.pbtxt in both
// train.compute_dtype values, FP32 then BF16, in one run: tokens/s, model FLOP/s, peak memory of
// the step, and model FLOP/s relative to this machine's fp32 sgemm peak and bf16 matmul peak,
// both measured by this same binary in the same run; then the BF16 / FP32 ratio.
//
//   build/bench/train_step_bench [--threads=N] [--set=field.path=value ...] [benchmark flags]
//   mpirun -np 2 build/bench/train_step_bench --threads=1 --set=mesh.expert_parallel=2
//
// Under mpirun every rank runs the step (it is collective) and rank 0 reports; tokens/s is the
// whole mesh's.
// Model FLOPs per step = tokens * (6 * N + 12 * L * H * hd * S) with N the activated matmul
// parameters (model/param_count.h documents the formula). A peak is the best of square 2048 and
// 4096 GEMMs (median of 5 calls each) at the same thread count, summed over ranks: sgemm for fp32,
// Gemm(kBf16) (bf16 inputs, fp32 accumulation, with its conversion) for bf16.
// Peak memory: the process's peak resident set (VmHWM) over the trainer's creation and its steps,
// reset before each dtype (/proc/self/clear_refs), summed over ranks. Tokens per CPU-second (the
// process's user + system time, summed over ranks) is the figure to compare on a shared machine,
// where other jobs' load moves wall time.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <mpi.h>
#include <sys/resource.h>

#include "core/allocator.h"
#include "benchmark/benchmark.h"
#include "core/blas_kernels.h"
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
double g_bf16_peak = 0;   // FLOP/s of Gemm(kBf16), likewise
std::vector<std::string> g_sets;  // --set overrides of bench_small
std::unique_ptr<Communicator> g_world;

struct DtypeResult {
  double tokens_per_second = 0;
  double model_flops_per_second = 0;
  double peak_rss_bytes = 0;
  double tokens_per_cpu_second = 0;  // per second of this process's CPU time (all threads)
};
DtypeResult g_results[2];  // [0] FP32, [1] BF16

double GemmFlopsPerSecond(GemmPrecision precision, int64_t n, int repeats) {
  Tensor a({n, n}), b({n, n}), c({n, n});
  for (int64_t i = 0; i < n * n; ++i) a[i] = b[i] = 1e-3f * static_cast<float>(i % 97);
  Gemm(precision, {}, n, n, n, a.data(), b.data(), c.data());  // warm-up (oneDNN: primitive)
  std::vector<double> rates;
  for (int r = 0; r < repeats; ++r) {
    Timer t;
    Gemm(precision, {}, n, n, n, a.data(), b.data(), c.data());
    rates.push_back(2.0 * n * n * n / t.Seconds());
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

// Each rank measures at once (they share the machine's cores); the mesh's peak is the sum.
double MeshPeak(GemmPrecision precision) {
  double peak = std::max(GemmFlopsPerSecond(precision, 2048, 5),
                         GemmFlopsPerSecond(precision, 4096, 5));
  g_world->AllReduceSum(&peak, 1);
  return peak;
}

// The kB value of `field` ("VmHWM:", "VmRSS:") in /proc/self/status, in bytes; 0 if absent.
double ProcStatusBytes(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == field) {
      double kb = 0;
      in >> kb;
      return kb * 1024;
    }
    std::getline(in, key);
  }
  return 0;
}

double ProcessCpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// Resets VmHWM to the current resident set (Linux >= 4.0); false if the kernel refuses.
bool ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

void BM_SgemmSquare(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor a({n, n}), b({n, n}), c({n, n});
  for (auto _ : state) Gemm({}, n, n, n, a.data(), b.data(), c.data());
  state.counters["flops_per_second"] =
      benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_SgemmSquare)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0);

// Arg 0: train.compute_dtype FP32; 1: BF16. The rest of the job is bench_small with --set.
void BM_TrainStepBenchSmall(benchmark::State& state) {
  const bool bf16 = state.range(0) == 1;
  const std::string job = std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/bench_small.pbtxt";
  std::vector<std::string> sets = g_sets;
  sets.push_back(bf16 ? "train.compute_dtype=BF16" : "train.compute_dtype=FP32");
  absl::StatusOr<JobSpec> spec = LoadJob({job}, sets);
  OPENMOE_CHECK_MSG(spec.ok(), "%s", std::string(spec.status().message()).c_str());
  const bool reset = ResetPeakRss();
  auto created = Trainer::Create(*spec, g_world.get());
  OPENMOE_CHECK_MSG(created.ok(), "%s", std::string(created.status().message()).c_str());
  std::unique_ptr<Trainer> trainer = std::move(created).value();
  trainer->Step();  // warm-up: first-touch allocation of every activation buffer
  const int64_t tokens = spec->train().batch_rows() * spec->train().seq_len();
  const double flops_per_token =
      TrainingFlopsPerToken(trainer->layout(), spec->train().seq_len()).total;
  double seconds = 0;
  int64_t steps = 0;
  double cpu = -ProcessCpuSeconds();
  for (auto _ : state) {
    const StepResult r = trainer->Step();
    seconds += r.seconds;
    ++steps;
  }
  cpu += ProcessCpuSeconds();
  g_world->AllReduceSum(&cpu, 1);
  double rss = ProcStatusBytes(reset ? "VmHWM:" : "VmRSS:");
  g_world->AllReduceSum(&rss, 1);
  const double tokens_per_second = tokens * steps / seconds;
  DtypeResult& out = g_results[bf16 ? 1 : 0];
  out.tokens_per_second = tokens_per_second;
  out.model_flops_per_second = tokens_per_second * flops_per_token;
  out.peak_rss_bytes = rss;
  out.tokens_per_cpu_second = tokens * steps / cpu;
  state.SetLabel(bf16 ? "BF16" : "FP32");
  state.counters["tokens_per_second"] = tokens_per_second;
  state.counters["tokens_per_cpu_second"] = out.tokens_per_cpu_second;
  state.counters["model_flops_per_second"] = out.model_flops_per_second;
  state.counters["fraction_of_sgemm_peak"] = out.model_flops_per_second / g_sgemm_peak;
  state.counters["fraction_of_bf16_peak"] = out.model_flops_per_second / g_bf16_peak;
  state.counters[reset ? "peak_rss_mib" : "rss_mib"] = rss / (1 << 20);
}
BENCHMARK(BM_TrainStepBenchSmall)
    ->ArgName("bf16")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime()
    ->Iterations(5);

}  // namespace

// Ranks other than 0 run the (collective) benchmark silently.
class QuietReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace openmoe

int main(int argc, char** argv) {
  openmoe::EnsureBlasKernels(argv);
  openmoe::ReturnLargeFreesToTheSystem();  // as openmoe train does
  openmoe::InitMpi(&argc, &argv);
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
  openmoe::g_sgemm_peak = openmoe::MeshPeak(openmoe::GemmPrecision::kFp32);
  openmoe::g_bf16_peak = openmoe::MeshPeak(openmoe::GemmPrecision::kBf16);
  benchmark::AddCustomContext("openblas_threads", std::to_string(threads));
  benchmark::AddCustomContext("sgemm_peak_gflops", std::to_string(openmoe::g_sgemm_peak / 1e9));
  benchmark::AddCustomContext("bf16_peak_gflops", std::to_string(openmoe::g_bf16_peak / 1e9));
  benchmark::AddCustomContext("fp32_gemm", openmoe::GemmPathName(openmoe::GemmPrecision::kFp32));
  benchmark::AddCustomContext("bf16_gemm", openmoe::GemmPathName(openmoe::GemmPrecision::kBf16));
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
  const openmoe::DtypeResult& fp32 = openmoe::g_results[0];
  const openmoe::DtypeResult& bf16 = openmoe::g_results[1];
  if (rank0 && fp32.tokens_per_second > 0 && bf16.tokens_per_second > 0) {
    std::printf(
        "bench_small step: FP32 %.0f tokens/s (%.1f GFLOP/s, %.2fx sgemm peak, %.0f MiB), "
        "BF16 %.0f tokens/s (%.1f GFLOP/s, %.2fx sgemm peak, %.2fx bf16 peak, %.0f MiB); "
        "BF16 / FP32 %.2fx (per CPU-second %.2fx); peaks: sgemm %.1f GFLOP/s, bf16 %.1f GFLOP/s "
        "(%.2fx); BF16 GEMM path: %s\n",
        fp32.tokens_per_second, fp32.model_flops_per_second / 1e9,
        fp32.model_flops_per_second / openmoe::g_sgemm_peak, fp32.peak_rss_bytes / (1 << 20),
        bf16.tokens_per_second, bf16.model_flops_per_second / 1e9,
        bf16.model_flops_per_second / openmoe::g_sgemm_peak,
        bf16.model_flops_per_second / openmoe::g_bf16_peak, bf16.peak_rss_bytes / (1 << 20),
        bf16.tokens_per_second / fp32.tokens_per_second,
        bf16.tokens_per_cpu_second / fp32.tokens_per_cpu_second, openmoe::g_sgemm_peak / 1e9,
        openmoe::g_bf16_peak / 1e9, openmoe::g_bf16_peak / openmoe::g_sgemm_peak,
        openmoe::GemmPathName(openmoe::GemmPrecision::kBf16).c_str());
  }
  benchmark::Shutdown();
  openmoe::g_world.reset();
  MPI_Finalize();
  return 0;
}
