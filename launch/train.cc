#include "launch/train.h"

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/gemm.h"
#include "launch/job_loader.h"
#include "launch/metrics.h"
#include "launch/trainer.h"
#include "parallel/communicator.h"
#include "model/param_count.h"

namespace openmoe {

namespace {

// OpenBLAS threads for this rank: the job's setting, or this machine's cores shared among the
// ranks running on it.
int ThreadsFor(const JobSpec& spec) {
  if (spec.train().threads() > 0) return static_cast<int>(spec.train().threads());
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  int local_ranks = 1;
  MPI_Comm_size(local, &local_ranks);
  MPI_Comm_free(&local);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
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
  MetricsWriter metrics;
  if (rank0 && !spec.logging().metrics_path().empty()) {
    absl::Status s = metrics.Open(spec.logging().metrics_path());
    if (!s.ok()) return s;
  }
  const int64_t steps = spec.train().steps();
  const int64_t print_every = std::max<int64_t>(1, spec.logging().print_every());
  double total_seconds = 0;
  for (int64_t i = 0; i < steps; ++i) {
    const StepResult r = trainer.Step();
    total_seconds += r.seconds;
    if (!std::isfinite(r.loss)) {
      return absl::InternalError(absl::StrFormat("step %d: loss is %f; stopping", r.step, r.loss));
    }
    absl::Status s = metrics.Write(StepRecordJson(spec, r));
    if (!s.ok()) return s;
    if (rank0 && ((i + 1) % print_every == 0 || i + 1 == steps)) {
      std::printf("%s\n", ProgressLine(r, steps, total_seconds / (i + 1)).c_str());
      std::fflush(stdout);
    }
  }
  return absl::OkStatus();
}

}  // namespace openmoe
