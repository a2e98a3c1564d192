#include "launch/train_loop.h"


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
#include "core/communicator.h"
#include "core/gemm.h"
#include "core/timer.h"
#include "launch/checkpoint/checkpoint.h"
#include "launch/console.h"
#include "launch/evaluator.h"
#include "launch/job_loader.h"
#include "launch/memory_account.h"
#include "launch/metrics.h"
#include "launch/run_records.h"
#include "launch/thread_default.h"
#include "launch/trainer.h"
#include "parallel/collective_status.h"
#include "model/param_count.h"

namespace openmoe {

namespace {

// OpenBLAS threads for this rank: the job's train.threads, else OPENBLAS_NUM_THREADS, else
// DefaultGemmThreads of the cores this process may use shared among the ranks on its machine
// (one thread for small models). Collective.
int ThreadsFor(const JobSpec& spec, Communicator& world) {
  const int local_ranks = world.LocalSize();
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
  return DefaultGemmThreads(spec, std::max(1, cores / local_ranks));
}

// The router in a line, for MoE models: who chooses and the options after OpenMoE's router.
std::string RouterLine(const JobSpec& spec) {
  const RouterConfig& r = spec.router();
  if (spec.model().num_experts() == 0) return "";
  std::string line =
      r.selection() == EXPERTS_CHOOSE
          ? absl::StrFormat("\nrouter: experts choose (each its top capacity of a %d-token "
                            "group): a token's routing depends on LATER tokens of its group",
                            r.group_size())
          : absl::StrFormat("\nrouter: tokens choose top-%d", r.top_k());
  if (r.score_function() == SIGMOID) line += ", sigmoid scores";
  if (r.normalize_top_k()) line += ", top-k weights renormalised";
  if (r.bias_update_rate() > 0)
    line += absl::StrFormat(", bias balancing (rate %g)", r.bias_update_rate());
  if (r.num_expert_groups() > 1) {
    line += absl::StrFormat(", %d of %d expert groups per token", r.groups_per_token(),
                            r.num_expert_groups());
  }
  if (r.load_balance_scope() != GROUP && r.selection() != EXPERTS_CHOOSE) {
    line += absl::StrCat(", load balance per ", LoadBalanceScope_Name(r.load_balance_scope()));
  }
  return line;
}

// "1 rank" (alone, or mpirun -np 1) or "N MPI ranks".
std::string RanksLabel(int ranks) {
  return ranks == 1 ? "1 rank" : absl::StrFormat("%d MPI ranks", ranks);
}

void PrintStart(const JobSpec& spec, const std::string& job_description, const Trainer& trainer,
                int threads, int ranks) {
  // Counts of the whole model (rank 0 holds only its experts).
  const ParamCounts counts = CountParams(ParamLayout(DimsFromSpec(spec)));
  const Mesh& mesh = trainer.mesh();
  console::Out(absl::StrFormat("--- resolved job spec (%s) ---\n%s-------------------------",
                               job_description, DescribeJob(spec)));
  if (const ModelDims dims = DimsFromSpec(spec); dims.num_shared_experts > 0) {
    console::Out(absl::StrFormat(
        "shared experts: %d per MoE layer (d_ff %d each, %.3fM parameters per layer), every "
        "token, no capacity, added to the routed experts' output",
        dims.num_shared_experts, dims.expert_d_ff,
        static_cast<double>(counts[Component::kSharedExperts].total) /
            static_cast<double>(dims.NumMoeLayers()) / 1e6));
  }
  console::Out(absl::StrFormat(
      "parameters: %.3fM total, %.3fM activated per token (non-embedding %.3fM / %.3fM)"
      "\nmesh: %d chips (%dx%d torus), %d data shards (expert_parallel %d) x model_parallel %d,"
      " %s x %d chips"
      " (%s), experts %d..%d on rank 0 | OpenBLAS threads per rank: %d\ngemm (%s): %s%s",
      counts.total / 1e6, counts.activated / 1e6, counts.non_embedding_total / 1e6,
      counts.non_embedding_activated / 1e6, mesh.num_chips, mesh.torus_x, mesh.torus_y,
      mesh.NumShards(), mesh.expert_parallel, mesh.model_parallel, RanksLabel(ranks),
      mesh.chips_per_rank,
      mesh.model_ranks > 1
          ? absl::StrFormat("a model group spans %d ranks, each holds 1/%d of the split weights",
                            mesh.model_ranks, mesh.model_ranks)
          : absl::StrFormat("%d data shards per rank, whole weights", mesh.ShardsPerRank()),
      mesh.first_local_expert, mesh.first_local_expert + mesh.num_local_experts - 1, threads,
      ComputeDtype_Name(spec.train().compute_dtype()),
      GemmPathName(spec.train().compute_dtype() == BF16 ? GemmPrecision::kBf16
                                                        : GemmPrecision::kFp32),
      RouterLine(spec)));
}

// Every rank's peak resident memory (MiB), printed by rank 0. Collective.
void ReportPeakMemory(Communicator& world) {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::vector<int64_t> kib(world.size(), 0);
  kib[world.rank()] = usage.ru_maxrss;  // KiB on Linux
  world.AllReduceSum(kib.data(), static_cast<int64_t>(kib.size()));
  if (world.rank() != 0) return;
  for (int r = 0; r < world.size(); ++r)
    console::Out(absl::StrFormat("peak_rss_mib rank %d: %.1f", r, kib[r] / 1024.0));
}

// The steps from the trainer's current step to train.steps, each recorded in `metrics` and
// `summary`; stops early (OK) when the checkpoint session says so (a stop signal). Collective.
absl::Status RunSteps(Trainer& trainer, CheckpointSession& checkpoints, EvalSession& eval,
                      MetricsWriter& metrics,
                      const CostBreakdown& v3, const std::string& run_id, RunSummary& summary) {
  const JobSpec& spec = trainer.spec();
  const bool rank0 = trainer.world().rank() == 0;
  const int64_t steps = spec.train().steps();
  const int64_t print_every = std::max<int64_t>(1, spec.logging().print_every());
  ThroughputWindow recent(std::max<int64_t>(1, spec.logging().throughput_window()));
  bool accounted = false;
  while (trainer.step() < steps) {
    OPENMOE_ASSIGN_OR_RETURN(const StepResult r, trainer.TryStep());
    // Once, after the first step (every buffer at its steady size): the memory account.
    std::string memory_json;
    if (!accounted) {
      accounted = true;
      const MemoryAccount account = AccountMemory(trainer);
      memory_json = MemoryAccountJson(account);
      if (rank0) console::Out(MemoryAccountText(account));
    }
    // On the weights after this step's update: what a checkpoint step_<r.step + 1> holds.
    const EvalSession::Output evaluated = eval.AfterStep(r.step + 1);
    summary.Add(r);
    recent.Add(r.tokens, r.seconds);
    OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(
        trainer.world(),
        rank0 ? metrics.Write(WithJsonKey(
                    WithJsonKey(StepRecordJson(spec, r, v3, run_id), "eval", evaluated.json),
                    "memory", memory_json))
              : absl::OkStatus()));
    const int64_t done = r.step + 1;
    if (rank0 && (done % print_every == 0 || done == steps || r.skipped)) {
      console::Out(ProgressLine(r, steps, recent.TokensPerSecond(), recent.SecondsPerStep(), v3) +
                   (spec.logging().phase_timing() ? PhaseColumn(r.timing) : ""));
    }
    if (rank0 && !evaluated.line.empty()) console::Out(evaluated.line);
    OPENMOE_ASSIGN_OR_RETURN(const bool stop, checkpoints.AfterStep(trainer));
    if (stop) {
      summary.status = absl::StrCat("stopped by ", checkpoints.stopped_by());
      return absl::OkStatus();
    }
  }
  return checkpoints.Finish(trainer);
}

}  // namespace

absl::Status RunTrain(const JobSpec& spec, const std::string& job_description,
                      Communicator* world) {
  Timer wall;
  const bool rank0 = world->rank() == 0;
  if (rank0) {
    console::Out(absl::StrFormat(
        "openmoe train: %s | %s | building the mesh, the model and the data sources...",
        job_description, RanksLabel(world->size())));
  }
  const int threads = ThreadsFor(spec, *world);
  SetGemmThreads(threads);

  // Before any compute: one run per checkpoint.dir, and a directory every rank can write.
  std::unique_ptr<RunLock> lock;
  if (!spec.checkpoint().dir().empty()) {
    OPENMOE_ASSIGN_OR_RETURN(lock, RunLock::Acquire(spec.checkpoint().dir(), *world));
  }
  // Eval rows before any compute: a bad eval source fails every rank here.
  absl::StatusOr<std::vector<EvalSet>> eval_sets = LoadEvalSets(spec);
  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(*world, eval_sets.status()));
  OPENMOE_ASSIGN_OR_RETURN(std::unique_ptr<Trainer> created, Trainer::Create(spec, world));
  Trainer& trainer = *created;
  EvalSession eval(*std::move(eval_sets), trainer);
  if (rank0) PrintStart(spec, job_description, trainer, threads, world->size());
  // The same job on a real v3 slice of this topology, for comparison on every progress line.
  const CostBreakdown v3 = PredictStepTime(spec, trainer.mesh());
  // Resume (or init from safetensors); interval, stop-signal and final saves
  // (launch/checkpoint/session.h).
  OPENMOE_ASSIGN_OR_RETURN(std::unique_ptr<CheckpointSession> checkpoints,
                           CheckpointSession::Start(trainer));

  const std::string run_id = NewRunId();  // rank 0's is the one written
  RunHeader header = MakeRunHeader(spec, job_description, world->size(), run_id);
  header.first_step = trainer.step();
  header.resumed_from = checkpoints->restored().dir;
  RunSummary summary(run_id, trainer.step());
  MetricsWriter metrics;
  const std::string& metrics_path = spec.logging().metrics_path();
  if (rank0 && !metrics_path.empty()) {
    std::string moved_to;
    absl::Status opened =
        metrics.Open(metrics_path, checkpoints->restored().restored ? trainer.step() : -1, &moved_to);
    if (opened.ok()) opened = metrics.Write(RunHeaderJson(header));
    if (!moved_to.empty()) {
      console::Warn(absl::StrFormat("a fresh run: the previous metrics in %s were moved to %s",
                                    metrics_path, moved_to));
    }
    summary.metrics_path = metrics_path;
    OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(*world, opened));
  } else {
    OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(*world, absl::OkStatus()));
  }

  const absl::Status status =
      RunSteps(trainer, *checkpoints, eval, metrics, v3, run_id, summary);
  if (!status.ok()) summary.status = absl::StrCat("error: ", status.message());
  summary.checkpoint = checkpoints->last_saved_path();
  summary.wall_seconds = wall.Seconds();
  if (rank0) {
    // Best effort on the error path: the run's own error is the one to report.
    const absl::Status wrote = metrics.Write(summary.Json());
    console::Out(summary.Text());
    if (status.ok() && !wrote.ok()) {
      console::Flush(5.0);
      return wrote;
    }
  }
  // Every error above is agreed by every rank, so this collective is reached by all or none.
  if (status.ok()) ReportPeakMemory(*world);
  // A stalled stdout must not keep the process from exiting with its checkpoint saved.
  console::Flush(5.0);
  return status;
}

}  // namespace openmoe
