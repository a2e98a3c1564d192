#include "launch/memory_check.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_format.h"
#include "model/config.h"
#include "model/param_count.h"
#include "model/params.h"
#include "model/router.h"
#include "model/activation_memory.h"
#include "parallel/mesh.h"

namespace openmoe {
namespace {

// What the process holds besides the account's owners: the binary, MPI, OpenBLAS, the data
// pipeline. Measured as the memory account's "other" (peak RSS minus what the trainer holds)
// after the allocator fix (core/allocator.h): 27-32 MiB for tiny and bench_small on one rank
// (20-26 MiB by 2026-12-07). BF16 adds oneDNN's per-thread bf16 copies of float GEMM operands
// (8 MiB for both): 34-36 MiB "other" (README "Memory").
constexpr double kRuntimeBytes = 40.0 * 1024 * 1024;
constexpr double kBf16RuntimeBytes = 48.0 * 1024 * 1024;

}  // namespace

absl::Status EstimateRankMemory(const JobSpec& spec, int world_size, int rank,
                                RankMemoryEstimate* out) {
  absl::StatusOr<Mesh> mesh = MakeMesh(spec, world_size, rank);
  if (!mesh.ok()) return mesh.status();
  const ModelDims dims = DimsFromSpec(spec);
  // The rank's piece: its experts, and piece model_index of model_ranks of the model-split
  // parameters (whole ones when the rank hosts whole model groups, model_ranks 1).
  const ParamLayout layout(dims, ParamShard{.first_expert = mesh->first_local_expert,
                                            .num_local_experts =
                                                dims.num_experts > 0 ? mesh->num_local_experts : -1,
                                            .model_parts = mesh->model_ranks,
                                            .model_index = mesh->model_index});
  // The local layout's expert tensors hold only this rank's experts: expert_parallel 1.
  const ChipMemory held = MemoryPerChip(layout, spec.optimizer(), 1);
  constexpr double kFloat = 4;
  RankMemoryEstimate e;
  e.chips_per_rank = mesh->chips_per_rank;
  e.params_bytes = kFloat * static_cast<double>(layout.total_size());
  e.grads_bytes = e.params_bytes;
  e.optimizer_bytes = spec.train().optimizer() == OPTIMIZER_ADAMW
                          ? 2 * e.params_bytes
                          : kFloat * static_cast<double>(held.optimizer_state);

  // Activations (model/activation_memory.h, the decoder's own accounting) of one microbatch of
  // every data shard the rank works on, at the piece's sizes.
  const int64_t micro = std::max<int64_t>(1, spec.train().microbatches());
  ActivationShape shape;
  shape.rows = spec.train().batch_rows() / std::max<int64_t>(1, mesh->NumShards()) / micro *
               mesh->ShardsPerRank();
  shape.seq_len = spec.train().seq_len();
  const double tokens = static_cast<double>(shape.rows * shape.seq_len);
  if (dims.num_experts > 0) {
    const RoutingConfig routing = RoutingFromSpec(spec, /*eval=*/false);
    // Kept rows: at most top_k per token, and at most the experts' capacity.
    const double capacity_rows = routing.dropless
                                     ? static_cast<double>(routing.top_k * routing.group_size)
                                     : static_cast<double>(routing.num_experts) *
                                           static_cast<double>(ExpertCapacity(routing));
    const double groups = tokens / static_cast<double>(std::max<int64_t>(1, routing.group_size));
    shape.kept_rows =
        groups * std::min<double>(capacity_rows, static_cast<double>(routing.top_k) *
                                                     static_cast<double>(routing.group_size));
    shape.received_rows = shape.kept_rows;  // what a rank sends, on average it receives
    shape.max_block_rows =
        routing.dropless ? shape.kept_rows
                         : std::min<double>(shape.kept_rows,
                                            groups * static_cast<double>(ExpertCapacity(routing)));
    shape.experts_remote = mesh->chips_per_rank < mesh->expert_parallel;  // as the runner decides
    shape.jitter = routing.jitter_noise > 0;
  }
  const ActivationEstimate act = EstimateActivations(layout.local_dims(), shape);
  e.activation_bytes = act.residual + act.attention + act.ffn + act.moe;
  e.scratch_bytes = act.scratch;
  e.communication_bytes = act.exchange;
  e.runtime_bytes = dims.precision == GemmPrecision::kBf16 ? kBf16RuntimeBytes : kRuntimeBytes;
  e.total_bytes = e.params_bytes + e.grads_bytes + e.optimizer_bytes + e.activation_bytes +
                  e.scratch_bytes + e.communication_bytes + e.runtime_bytes;
  *out = e;
  return absl::OkStatus();
}

int64_t AvailableMemoryBytes(std::string* what) {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  int64_t bytes = pages > 0 && page_size > 0 ? static_cast<int64_t>(pages) * page_size : INT64_MAX;
  if (what != nullptr) *what = "this machine has";
  rlimit limit{};
  if (getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
      limit.rlim_cur < static_cast<rlim_t>(bytes)) {
    bytes = static_cast<int64_t>(limit.rlim_cur);
    if (what != nullptr) *what = "the address-space limit (ulimit -v) is";
  }
  return bytes;
}

absl::Status CheckRankMemory(const JobSpec& spec, int world_size, int rank,
                             int64_t available_bytes, const std::string& job_description,
                             const std::string& available_what) {
  RankMemoryEstimate e;
  if (!EstimateRankMemory(spec, world_size, rank, &e).ok()) return absl::OkStatus();
  if (e.total_bytes <= static_cast<double>(available_bytes)) return absl::OkStatus();
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  return absl::ResourceExhaustedError(absl::StrFormat(
      "job (%s): needs ~%.1f GiB per rank (params %.1f + grads %.1f + optimizer %.1f + "
      "activations %.1f + scratch and exchange %.2f + runtime %.2f GiB, %d chips per rank), %s "
      "%.1f GiB; reduce model size, train.batch_rows or train.seq_len, raise train.microbatches, "
      "set train.remat, or use more ranks",
      job_description.empty() ? "defaults" : job_description, e.total_bytes / kGiB,
      e.params_bytes / kGiB, e.grads_bytes / kGiB, e.optimizer_bytes / kGiB,
      e.activation_bytes / kGiB, (e.scratch_bytes + e.communication_bytes) / kGiB,
      e.runtime_bytes / kGiB, e.chips_per_rank, available_what,
      static_cast<double>(available_bytes) / kGiB));
}

}  // namespace openmoe
