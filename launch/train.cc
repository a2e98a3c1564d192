#include "launch/train.h"

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/gemm.h"
#include "google/protobuf/text_format.h"
#include "launch/metrics.h"
#include "launch/trainer.h"

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
  std::string text;
  google::protobuf::TextFormat::PrintToString(spec, &text);
  std::printf("openmoe train: %s\n--- resolved job spec ---\n%s-------------------------\n",
              job_description.c_str(), text.c_str());
  int64_t total = 0, activated = 0;
  const ModelDims& dims = trainer.layout().dims();
  for (const ParamInfo& p : trainer.layout().params()) {
    total += p.size;
    activated += p.is_expert ? p.size / dims.num_experts * dims.top_k : p.size;
  }
  std::printf("parameters: %s total, %s activated per token | OpenBLAS threads: %d\n",
              absl::StrFormat("%.3fM", total / 1e6).c_str(),
              absl::StrFormat("%.3fM", activated / 1e6).c_str(), threads);
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
