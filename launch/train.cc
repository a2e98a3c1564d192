#include "launch/train.h"

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sched.h>
#include <sys/resource.h>

#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/check.h"
#include "core/gemm.h"
#include "launch/checkpoint_session.h"
#include "launch/job_loader.h"
#include "launch/metrics.h"
#include "launch/trainer.h"
#include "parallel/collective_status.h"
#include "parallel/communicator.h"
#include "model/param_count.h"

namespace openmoe {

namespace {

// OpenBLAS threads for this rank: the job's train.threads, else OPENBLAS_NUM_THREADS, else the
// cores this process may use shared among the ranks on its machine. Collective.
int ThreadsFor(const JobSpec& spec) {
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  int local_ranks = 1;
  MPI_Comm_size(local, &local_ranks);
  MPI_Comm_free(&local);
  if (spec.train().threads() > 0) return static_cast<int>(spec.train().threads());
  if (const char* env = std::getenv("OPENBLAS_NUM_THREADS"); env != nullptr && std::atoi(env) > 0) {
    return std::atoi(env);
  }
  // The cores this process may run on (its affinity mask: a scheduler's share, not the machine).
  cpu_set_t set;
  CPU_ZERO(&set);
  const int cores = sched_getaffinity(0, sizeof(set), &set) == 0
                        ? CPU_COUNT(&set)
                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / local_ranks);
}

void PrintStart(const JobSpec& spec, const std::string& job_description, const Trainer& trainer,
                int threads, int ranks) {
  // Counts of the whole model (rank 0 holds only its experts).
  const ParamCounts counts = CountParams(ParamLayout(DimsFromSpec(spec)));
  const Mesh& mesh = trainer.mesh();
  absl::PrintF("openmoe train: %s\n--- resolved job spec ---\n%s-------------------------\n",
              job_description.c_str(), DescribeJob(spec).c_str());
  absl::PrintF("parameters: %.3fM total, %.3fM activated per token (non-embedding %.3fM / %.3fM)"
              "\nmesh: %d chips (%dx%d torus), expert_parallel %d, %d MPI ranks x %d chips,"
              " experts %d..%d on rank 0 | OpenBLAS threads per rank: %d\n",
              counts.total / 1e6, counts.activated / 1e6, counts.non_embedding_total / 1e6,
              counts.non_embedding_activated / 1e6, mesh.num_chips, mesh.torus_x, mesh.torus_y,
              mesh.expert_parallel, ranks, mesh.chips_per_rank, mesh.first_local_expert,
              mesh.first_local_expert + mesh.num_local_experts - 1, threads);
  std::fflush(stdout);
}

// Every rank's peak resident memory (MiB), printed by rank 0. Collective.
void ReportPeakMemory(Communicator& world) {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::vector<int64_t> kib(world.size(), 0);
  kib[world.rank()] = usage.ru_maxrss;  // KiB on Linux
  world.AllReduceSum(kib.data(), static_cast<int64_t>(kib.size()));
  if (world.rank() != 0) return;
  for (int r = 0; r < world.size(); ++r) absl::PrintF("peak_rss_mib rank %d: %.1f\n", r, kib[r] / 1024.0);
  std::fflush(stdout);
}

}  // namespace

absl::Status RunTrain(const JobSpec& spec, const std::string& job_description) {
  std::unique_ptr<Communicator> world = MakeWorldCommunicator();
  const bool rank0 = world->rank() == 0;
  const int threads = ThreadsFor(spec);
  SetGemmThreads(threads);

  absl::StatusOr<std::unique_ptr<Trainer>> created = Trainer::Create(spec, world.get());
  if (!created.ok()) return created.status();
  Trainer& trainer = **created;
  if (rank0) PrintStart(spec, job_description, trainer, threads, world->size());
  // The same job on a real v3 slice of this topology, for comparison on every progress line.
  const CostBreakdown v3 = PredictStepTime(spec, trainer.mesh());
  MetricsWriter metrics;
  absl::Status opened = absl::OkStatus();
  if (rank0 && !spec.logging().metrics_path().empty()) opened = metrics.Open(spec.logging().metrics_path());
  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(*world, opened));
  const int64_t steps = spec.train().steps();
  const int64_t print_every = std::max<int64_t>(1, spec.logging().print_every());
  // Resume (or init from safetensors); interval, stop-signal and final saves
  // (launch/checkpoint_session.h).
  OPENMOE_ASSIGN_OR_RETURN(std::unique_ptr<CheckpointSession> checkpoints,
                           CheckpointSession::Start(trainer));
  const int64_t first_step = trainer.step();  // > 0 when resumed
  double total_seconds = 0;
  for (int64_t i = first_step; i < steps; ++i) {
    absl::StatusOr<StepResult> step = trainer.TryStep();
    if (!step.ok()) return step.status();
    const StepResult& r = *step;
    total_seconds += r.seconds;
    if (!std::isfinite(r.loss)) {
      return absl::InternalError(absl::StrFormat("step %d: loss is %f; stopping", r.step, r.loss));
    }
    OPENMOE_RETURN_IF_ERROR(
        AgreeOnFirstError(*world, rank0 ? metrics.Write(StepRecordJson(spec, r, v3)) : absl::OkStatus()));
    if (rank0 && ((i + 1) % print_every == 0 || i + 1 == steps)) {
      std::printf("%s\n", ProgressLine(r, steps, total_seconds / (i + 1 - first_step), v3).c_str());
      std::fflush(stdout);
    }
    OPENMOE_ASSIGN_OR_RETURN(const bool stop, checkpoints->AfterStep(trainer));
    if (stop) break;
  }
  OPENMOE_RETURN_IF_ERROR(checkpoints->Finish(trainer));
  ReportPeakMemory(*world);
  return absl::OkStatus();
}

}  // namespace openmoe
