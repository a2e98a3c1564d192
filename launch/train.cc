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
                int threads) {
  const ParamCounts counts = CountParams(trainer.layout());
  std::printf("openmoe train: %s\n--- resolved job spec ---\n%s-------------------------\n",
              job_description.c_str(), DescribeJob(spec).c_str());
  std::printf("parameters: %.3fM total, %.3fM activated per token (non-embedding %.3fM / %.3fM)"
              " | OpenBLAS threads: %d\n",
              counts.total / 1e6, counts.activated / 1e6, counts.non_embedding_total / 1e6,
              counts.non_embedding_activated / 1e6, threads);
  std::fflush(stdout);
}

}  // namespace

absl::Status RunTrain(const JobSpec& spec, const std::string& job_description) {
  int world = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (world != 1) {
    return absl::UnimplementedError(absl::StrCat(
        "rank ", rank, ": this build trains on one MPI rank only (", world,
        " were started); run without mpirun or with -np 1"));
  }
  const std::string& resume = spec.checkpoint().resume();
  if (resume != "auto" && resume != "never") {
    return absl::UnimplementedError(absl::StrCat(
        "checkpoint.resume=", resume, ": this build writes no checkpoints yet, so there is nothing to resume"));
  }
  const int threads = ThreadsFor(spec);
  SetGemmThreads(threads);

  Trainer trainer(spec);
  PrintStart(spec, job_description, trainer, threads);
  MetricsWriter metrics;
  if (!spec.logging().metrics_path().empty()) {
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
    if ((i + 1) % print_every == 0 || i + 1 == steps) {
      std::printf("%s\n", ProgressLine(r, steps, total_seconds / (i + 1)).c_str());
      std::fflush(stdout);
    }
  }
  return absl::OkStatus();
}

}  // namespace openmoe
