#include "parallel/cost/step_workload.h"

#include <algorithm>

#include "core/check.h"
#include "model/config.h"
#include "model/param_count.h"
#include "model/params.h"
#include "model/router.h"
#include "parallel/cost/hbm_traffic.h"

namespace openmoe {

const char* CollectiveKindName(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::kAllReduceShared:
      return "all_reduce_shared";
    case CollectiveKind::kAllReduceExperts:
      return "all_reduce_experts";
    case CollectiveKind::kAllToAll:
      return "all_to_all";
  }
  return "unknown";
}

int64_t ActivationBytes(const JobSpec& spec) {
  if (spec.cost_model().has_activation_bytes()) return spec.cost_model().activation_bytes();
  return spec.train().compute_dtype() == BF16 ? 2 : 4;
}

StepWorkload EstimateStepWorkload(const JobSpec& spec, const Mesh& mesh) {
  const CostModelConfig& cfg = spec.cost_model();
  const ModelDims dims = DimsFromSpec(spec);
  const ParamLayout layout(dims);
  const ParamCounts counts = CountParams(layout);
  const TorusShape torus = TorusOf(mesh, cfg.wraparound());
  const int64_t chips = std::max<int64_t>(1, mesh.num_chips);
  const int64_t ep = std::max<int64_t>(1, mesh.expert_parallel);
  const double act_bytes = static_cast<double>(ActivationBytes(spec));
  const double grad_bytes = static_cast<double>(cfg.gradient_bytes());

  StepWorkload w;
  w.num_chips = chips;
  w.microbatches = std::max<int64_t>(1, spec.train().microbatches());
  w.num_moe_layers = dims.NumMoeLayers();
  w.tokens_per_step = spec.train().batch_rows() * spec.train().seq_len();
  w.tokens_per_chip = w.tokens_per_step / chips;
  w.tokens_per_chip_microbatch = w.tokens_per_chip / w.microbatches;
  const double tokens = static_cast<double>(w.tokens_per_chip);

  // Dispatch buffer rows per routing group.
  double rows_per_group = 0;
  int64_t groups_per_chip_microbatch = 0;
  if (dims.num_experts > 0) {
    const RoutingConfig routing = RoutingFromSpec(spec, /*eval=*/false);
    const double g = static_cast<double>(routing.group_size);
    const double k_g = static_cast<double>(routing.top_k) * g;
    const double e_c = static_cast<double>(routing.num_experts * ExpertCapacity(routing));
    rows_per_group = routing.dropless ? k_g : cfg.padded_dispatch() ? e_c : std::min(k_g, e_c);
    w.expert_rows_per_token = rows_per_group / g;
    groups_per_chip_microbatch = w.tokens_per_chip_microbatch / routing.group_size;
  }

  const TrainingFlops flops = TrainingFlopsPerToken(layout, spec.train().seq_len());
  w.model_flops_per_chip = flops.total * tokens;
  if (dims.num_layers > 0) {
    const double attention_params_per_layer =
        static_cast<double>(counts[Component::kAttention].total) /
        static_cast<double>(dims.num_layers);
    const double attention_flops_per_layer =
        6 * attention_params_per_layer + flops.attention / static_cast<double>(dims.num_layers);
    w.moe_attention_flops_per_chip =
        attention_flops_per_layer * static_cast<double>(w.num_moe_layers) * tokens;
  }

  const TokenTraffic traffic =
      TrafficPerToken(dims, spec.train().seq_len(), w.expert_rows_per_token);
  w.elementwise_bytes_per_chip = traffic.elementwise_elements * act_bytes * tokens;
  w.activation_bytes_per_chip =
      traffic.saved_elements * act_bytes * static_cast<double>(w.tokens_per_chip_microbatch);

  const ChipMemory memory = MemoryPerChip(layout, spec, ep);
  w.state_bytes_per_chip = memory.total_bytes;
  w.optimizer_bytes_per_chip = static_cast<double>(memory.params) * grad_bytes *
                               static_cast<double>(4 + 2 * (w.microbatches - 1));

  // Gradient all-reduce of the shared parameters over every chip.
  CollectiveWork shared;
  shared.kind = CollectiveKind::kAllReduceShared;
  shared.footprint = FootprintOf(torus, AllChips(mesh));
  shared.group_size = chips;
  shared.num_groups = 1;
  shared.bytes_per_chip = static_cast<double>(counts.total - counts.expert_total) * grad_bytes;
  shared.calls = 1;
  w.collectives.push_back(shared);

  if (dims.num_experts > 0) {
    CollectiveWork experts;
    experts.kind = CollectiveKind::kAllReduceExperts;
    experts.footprint = FootprintOf(torus, ExpertReplicaChips(mesh, 0));
    experts.group_size = chips / ep;
    experts.num_groups = ep;
    experts.bytes_per_chip =
        static_cast<double>(counts.expert_total) / static_cast<double>(ep) * grad_bytes;
    experts.calls = 1;
    w.collectives.push_back(experts);

    CollectiveWork a2a;
    a2a.kind = CollectiveKind::kAllToAll;
    a2a.footprint = FootprintOf(torus, ExpertGroupChips(mesh, 0));
    a2a.group_size = ep;
    a2a.num_groups = chips / ep;
    a2a.bytes_per_chip = rows_per_group * static_cast<double>(groups_per_chip_microbatch) *
                         static_cast<double>(dims.d_model) * act_bytes;
    a2a.calls = 4 * w.num_moe_layers * w.microbatches;
    w.collectives.push_back(a2a);
  }
  return w;
}

}  // namespace openmoe
