// The `openmoe` binary: parses the command line and dispatches to a subcommand. Every error ends
// here as one line `openmoe: <message>` on stderr and exit status 1; library code only returns
// absl::Status.
//
//   openmoe train --job FILE ... [--set field.path=value ...] [--allow_defaults]
//                 [--resume auto|never|DIR]
//   openmoe plan --job FILE ... [--set field.path=value ...] [--allow_defaults] [--json] [--search]
//   openmoe prep --input FILE|DIR ... (--tokenizer MODEL | --train_tokenizer MODEL) [--out DIR]
//                [--npy OUT.npy --rows R --seq_len S [--form causal_lm|prefix_lm] [--mode T]
//                [--force]]
//   openmoe score --checkpoint DIR|FILE.safetensors --tokens FILE.npy [--form causal_lm|prefix_lm]
//                 [--job FILE ...] [--json]
//   openmoe export --checkpoint DIR --out FILE.safetensors [--allow_nonfinite]
//   openmoe analyze --checkpoint DIR ... --job FILE ... [--out DIR] [--rows N] [--min_count K]
//   openmoe help [SUBCOMMAND]
//
// No exception leaves main: std::bad_alloc becomes `openmoe: out of memory ...`, any other
// std::exception `openmoe: internal error: ...`, both exit 1 (never abort's 134).
#include <cstdlib>
#include <cstdio>
#include <exception>
#include <iostream>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/allocator.h"
#include "core/blas_kernels.h"
#include "launch/analyze.h"
#include "launch/args.h"
#include "launch/checkpoint/checkpoint.h"
#include "launch/job_loader.h"
#include "launch/memory_check.h"
#include "launch/plan_command.h"
#include "launch/prep.h"
#include "launch/score.h"
#include "launch/source_rows.h"
#include "launch/train_loop.h"
#include "parallel/communicator.h"
#include "parallel/cost/plan.h"

namespace openmoe {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "openmoe: %s\n", std::string(status.message()).c_str());
  return 1;
}

int Plan(const CommandLine& cl) {
  auto spec = LoadJob(cl.GetAll("job"), cl.GetAll("set"), cl.GetBool("allow_defaults"));
  if (!spec.ok()) return Fail(spec.status());
  const absl::Status status = cl.GetBool("search")
                                  ? RunPlanSearch(*spec, cl.GetBool("json"), std::cout)
                                  : RunPlan(*spec, cl.GetBool("json"), std::cout);
  std::cout.flush();
  return status.ok() ? 0 : Fail(status);
}

// Single process: no MPI.
int Score(const CommandLine& cl) {
  ScoreOptions options;
  options.checkpoint = cl.Get("checkpoint");
  options.tokens = cl.Get("tokens");
  options.job_files = cl.GetAll("job");
  options.sets = cl.GetAll("set");
  options.json = cl.GetBool("json");
  absl::StatusOr<RowForm> form = ParseRowForm(cl.Get("form", "causal_lm"));
  if (!form.ok()) return Fail(form.status());
  options.form = *form;
  const absl::Status status = RunScore(options, std::cout);
  std::cout.flush();
  return status.ok() ? 0 : Fail(status);
}

// Single process: no MPI.
int Analyze(const CommandLine& cl) {
  AnalyzeOptions options;
  options.checkpoints = cl.GetAll("checkpoint");
  options.job_files = cl.GetAll("job");
  options.sets = cl.GetAll("set");
  options.out_dir = cl.Get("out", options.out_dir);
  options.plots = !cl.GetBool("no_plots");
  for (auto [flag, value] : {std::pair{"rows", &options.rows}, {"min_count", &options.min_count}}) {
    if (cl.Has(flag) && !absl::SimpleAtoi(cl.Get(flag), value))
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("analyze: --", flag, " ", cl.Get(flag), " is not an integer")));
  }
  const absl::Status status = RunAnalyze(options, std::cout);
  std::cout.flush();
  return status.ok() ? 0 : Fail(status);
}

int Export(const CommandLine& cl) {
  auto stats =
      ExportSafetensors(cl.Get("checkpoint"), cl.Get("out"), cl.GetBool("allow_nonfinite"));
  if (!stats.ok()) return Fail(stats.status());
  absl::PrintF("exported %d tensors (%.1f MB, step %d) to %s\n", stats->tensors,
               stats->bytes / 1e6, stats->step, cl.Get("out"));
  return 0;
}

// The job `openmoe train` names: its files, --set overrides and --resume.
absl::StatusOr<JobSpec> LoadTrainJob(const CommandLine& cl) {
  std::vector<std::string> sets = cl.GetAll("set");
  if (cl.Has("resume")) sets.push_back("checkpoint.resume=" + cl.Get("resume"));
  return LoadJob(cl.GetAll("job"), sets, cl.GetBool("allow_defaults"));
}

// Rank 0 loads and validates the job, checks that its share fits this machine's memory, and
// broadcasts the spec (or the error), so that every rank agrees on the spec and on failing, and
// only rank 0 reports a job error.
int TrainOnWorld(const CommandLine& cl, Communicator* comm) {
  const int rank = comm->rank(), world = comm->size();

  const std::vector<std::string> files = cl.GetAll("job");
  const std::vector<std::string> sets = cl.GetAll("set");
  const std::string description = JobDescription(files, sets);
  int loaded = 0;
  std::string payload;  // serialized JobSpec, or the error message
  if (rank == 0) {
    absl::StatusOr<JobSpec> spec = LoadTrainJob(cl);
    if (spec.ok()) {
      // Before the Trainer allocates: a job too large for the machine fails here with one line
      // rather than being killed halfway through allocating.
      std::string what;
      const int64_t available = AvailableMemoryBytes(&what);
      if (absl::Status fits = CheckRankMemory(*spec, world, rank, available, description, what);
          !fits.ok()) {
        spec = fits;
      }
    }
    loaded = spec.ok() ? 1 : 0;
    payload = spec.ok() ? spec->SerializeAsString() : std::string(spec.status().message());
  }
  std::string verdict = loaded ? "loaded" : "failed";
  comm->Broadcast(&verdict, 0);
  comm->Broadcast(&payload, 0);
  if (verdict != "loaded") {
    if (rank == 0) Fail(absl::InvalidArgumentError(payload));
    return 1;
  }
  JobSpec spec;
  if (!spec.ParseFromString(payload)) {
    if (rank == 0) Fail(absl::InternalError("job spec broadcast failed to parse"));
    return 1;
  }
  // RunTrain prints the resolved spec (DescribeJob) once on rank 0 at start.
  const absl::Status status = RunTrain(spec, description, comm);
  // The lowest failing rank reports (rank 0 when it failed too), so an error shared by all ranks
  // prints once and one seen by a single rank is not lost.
  int64_t first_failed = status.ok() ? world : rank;
  comm->AllReduceMin(&first_failed, 1);
  if (first_failed == rank) {
    if (rank == 0) {
      Fail(status);
    } else {
      std::fprintf(stderr, "openmoe: rank %d: %s\n", rank, std::string(status.message()).c_str());
    }
  }
  return first_failed < world ? 1 : 0;
}

// Whether mpirun (or another PMIx / PMI launcher) started this process as one of its ranks.
bool LaunchedAsRank() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(var) != nullptr) return true;
  return false;
}

// Under mpirun the world is MPI_COMM_WORLD. Alone, it is one rank without MPI: Open MPI's
// singleton start-up forks a daemon (orted) and waits for its handshake, which costs ~0.3 s alone
// and, with a dozen runs starting beside two busy processes, up to 8 s without using CPU (README
// "Tests on a busy machine"); one rank needs no collective library at all.
int Train(const CommandLine& cl, int* argc, char*** argv) {
  if (!LaunchedAsRank()) {
    // `srun -n N` without an MPI plugin starts N processes that each see no launcher: every one
    // would train the whole job alone and write the same checkpoints and metrics.
    if (const char* tasks = std::getenv("SLURM_STEP_NUM_TASKS");
        tasks != nullptr && std::atoi(tasks) > 1) {
      return Fail(absl::FailedPreconditionError(absl::StrCat(
          "srun started ", tasks,
          " tasks but none has an MPI launcher environment (no PMIx / PMI variables), so each "
          "would train alone: run `srun --mpi=pmix ...` (launch/slurm_example.sbatch) or mpirun")));
    }
    SelfCommunicator self;
    return TrainOnWorld(cl, &self);
  }
  InitMpi(argc, argv);
  const int code = TrainOnWorld(cl, MakeWorldCommunicator().get());
  FinalizeMpi();
  return code;
}

int Dispatch(int argc, char** argv) {
  auto cl = openmoe::ParseCommandLine(argc, argv);
  if (!cl.ok()) {
    openmoe::Fail(cl.status());
    std::fprintf(stderr, "\n%s", openmoe::Usage(argc > 1 ? argv[1] : "").c_str());
    return 1;
  }
  if (cl->subcommand == "help") {
    std::cout << openmoe::Usage(cl->help_topic);
    return 0;
  }
  if (cl->subcommand == "plan") return openmoe::Plan(*cl);
  if (cl->subcommand == "prep") {
    const absl::Status status = openmoe::RunPrepCommand(*cl, std::cout);
    return status.ok() ? 0 : openmoe::Fail(status);
  }
  if (cl->subcommand == "train") return openmoe::Train(*cl, &argc, &argv);
  if (cl->subcommand == "score") return openmoe::Score(*cl);
  if (cl->subcommand == "export") return openmoe::Export(*cl);
  if (cl->subcommand == "analyze") return openmoe::Analyze(*cl);
  return openmoe::Fail(
      absl::UnimplementedError("subcommand '" + cl->subcommand + "' is not implemented"));
}

// Ends a failed run after an exception: under mpirun the other ranks may be blocked in a
// collective, so the job is aborted (alone, MPI never started).
int FailAfterException(const std::string& message) {
  std::fprintf(stderr, "openmoe: %s\n", message.c_str());
  std::fflush(stderr);
  EndMpiAfterFailure();
  return 1;
}

}  // namespace
}  // namespace openmoe

int main(int argc, char** argv) {
  openmoe::EnsureBlasKernels(argv);
  openmoe::ReturnLargeFreesToTheSystem();
  try {
    return openmoe::Dispatch(argc, argv);
  } catch (const std::bad_alloc& e) {
    return openmoe::FailAfterException(absl::StrFormat(
        "out of memory (%s); reduce the model or batch size, or use more ranks", e.what()));
  } catch (const std::exception& e) {
    return openmoe::FailAfterException(absl::StrCat("internal error: ", e.what()));
  }
}
