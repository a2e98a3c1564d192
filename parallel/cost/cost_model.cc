#include "parallel/cost/cost_model.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "parallel/cost/collective_cost.h"
#include "parallel/cost/grad_overlap.h"

namespace openmoe {

namespace {

// The overlapped prediction's fields of `b` (cost_model.h); b's collectives are filled.
void OverlapGradientReduce(const StepWorkload& w, double sustained_flops, double hbm_bandwidth,
                           const LinkParams& link, CostBreakdown* b) {
  const Footprint* shared = nullptr;
  const Footprint* experts = nullptr;
  for (size_t i = 0; i < w.collectives.size(); ++i) {
    const CollectiveWork& c = w.collectives[i];
    if (c.kind == CollectiveKind::kAllReduceShared) {
      shared = &c.footprint;
      b->grad_reduce_seconds += b->collectives[i].seconds;
    } else if (c.kind == CollectiveKind::kAllReduceExperts) {
      experts = &c.footprint;
      b->grad_reduce_seconds += b->collectives[i].seconds;
    }
  }
  const double microbatches = static_cast<double>(std::max<int64_t>(1, w.microbatches));
  b->backward_seconds =
      ((2.0 / 3) *
           (w.model_flops_per_chip + w.dispatch_flops_per_chip + w.capacity_flops_per_chip +
            w.mxu_padding_flops_per_chip) /
           sustained_flops +
       w.remat_flops_per_chip / sustained_flops + (2.0 / 3) * b->attention_extra_seconds +
       (2.0 / 3) * w.elementwise_bytes_per_chip / hbm_bandwidth) /
      microbatches;
  b->overlap_grad_reduce = w.overlap_grad_reduce;
  b->grad_bucket_bytes = w.grad_bucket_bytes;
  const GradOverlap o =
      ScheduleGradReduce(w.grad_parts, w.grad_bucket_bytes > 0 ? w.grad_bucket_bytes : 1e30,
                         b->backward_seconds, [&](double shared_bytes, double expert_bytes) {
                           double seconds = 0;
                           if (shared != nullptr && shared_bytes > 0) {
                             seconds += AllReduceSeconds(*shared, shared_bytes, link);
                           }
                           if (experts != nullptr && expert_bytes > 0) {
                             seconds += AllReduceSeconds(*experts, expert_bytes, link);
                           }
                           return seconds;
                         });
  b->grad_buckets = o.buckets;
  b->grad_reduce_bucketed_seconds = o.reduce_seconds;
  b->grad_reduce_exposed_seconds = o.exposed_seconds;
  b->overlapped_step_seconds =
      b->unoverlapped_step_seconds - b->grad_reduce_seconds + o.exposed_seconds;
}

}  // namespace

CostBreakdown PredictStepTime(const StepWorkload& w, const CostModelConfig& config) {
  const double sustained_flops = config.peak_flops_per_chip() * config.matmul_efficiency();
  // ici_links_per_chip / 4 parallel links join a chip to each of its four torus neighbours.
  const double links_per_neighbour = static_cast<double>(config.ici_links_per_chip()) / 4;
  const LinkParams link{config.ici_link_bandwidth() * links_per_neighbour, config.hop_latency()};
  // The all-to-alls reach a fitted fraction of it (many small messages, XLA's schedule).
  const LinkParams a2a_link{link.bandwidth * config.all_to_all_efficiency(), link.hop_latency};

  CostBreakdown b;
  b.tokens_per_step = w.tokens_per_step;
  b.model_flops_per_chip = w.model_flops_per_chip;
  b.dispatch_flops_per_chip = w.dispatch_flops_per_chip;
  b.capacity_flops_per_chip = w.capacity_flops_per_chip;
  b.remat_flops_per_chip = w.remat_flops_per_chip;
  b.mxu_padding_flops_per_chip = w.mxu_padding_flops_per_chip;
  const double attention_flop_seconds = w.attention_flops_per_chip / sustained_flops;
  const double attention_mxu_seconds = w.attention_mxu_utilisation > 0
                                           ? attention_flop_seconds / w.attention_mxu_utilisation
                                           : attention_flop_seconds;
  const double attention_hbm_seconds = w.attention_operand_bytes_per_chip / config.hbm_bandwidth();
  b.attention_hbm_bound = attention_hbm_seconds > attention_mxu_seconds;
  b.attention_matmul_seconds = std::max(attention_mxu_seconds, attention_hbm_seconds);
  b.attention_extra_seconds = b.attention_matmul_seconds - attention_flop_seconds;
  b.compute_seconds = (w.model_flops_per_chip + w.dispatch_flops_per_chip +
                       w.capacity_flops_per_chip + w.remat_flops_per_chip +
                       w.mxu_padding_flops_per_chip) /
                          sustained_flops +
                      b.attention_extra_seconds;
  b.hbm_bytes_per_chip = w.elementwise_bytes_per_chip + w.optimizer_bytes_per_chip;
  b.memory_seconds = b.hbm_bytes_per_chip / config.hbm_bandwidth();

  double all_to_all = 0;
  for (const CollectiveWork& c : w.collectives) {
    CollectiveCost cost;
    cost.kind = c.kind;
    cost.group_size = c.group_size;
    cost.num_groups = c.num_groups;
    cost.placement = c.footprint.Describe();
    cost.bytes_per_chip = c.bytes_per_chip;
    cost.calls = c.calls;
    cost.seconds_per_call = c.kind == CollectiveKind::kAllToAll
                                ? AllToAllSeconds(c.footprint, c.bytes_per_chip, a2a_link)
                                : AllReduceSeconds(c.footprint, c.bytes_per_chip, link);
    cost.seconds = cost.seconds_per_call * static_cast<double>(c.calls);
    if (c.kind == CollectiveKind::kAllToAll) {
      all_to_all += cost.seconds;
    } else {
      b.all_reduce_seconds += cost.seconds;
      if (IsModelAxis(c.kind)) b.model_all_reduce_seconds += cost.seconds;
    }
    b.collectives.push_back(cost);
  }
  if (config.overlap_all_to_all_with_attention()) {
    b.all_to_all_hidden_seconds =
        std::min(all_to_all, w.moe_attention_flops_per_chip / sustained_flops);
  }
  b.all_to_all_seconds = all_to_all - b.all_to_all_hidden_seconds;

  b.unoverlapped_step_seconds =
      b.compute_seconds + b.memory_seconds + b.all_to_all_seconds + b.all_reduce_seconds;
  OverlapGradientReduce(w, sustained_flops, config.hbm_bandwidth(), link, &b);
  b.step_seconds = b.overlap_grad_reduce ? b.overlapped_step_seconds : b.unoverlapped_step_seconds;
  if (b.step_seconds > 0) {
    b.tokens_per_second = static_cast<double>(w.tokens_per_step) / b.step_seconds;
    b.mfu = w.model_flops_per_chip / (b.step_seconds * config.peak_flops_per_chip());
  }

  // Per core: a replica of the chip's state, its share of the chip's tokens' activations, against
  // its share of the chip's HBM.
  const int64_t cores = std::max<int64_t>(1, w.cores_per_chip);
  b.cores_per_chip = cores;
  b.state_bytes = w.state_bytes_per_chip;
  b.activation_bytes =
      static_cast<int64_t>(w.activation_bytes_per_chip / static_cast<double>(cores));
  b.memory_bytes = b.state_bytes + b.activation_bytes;
  b.hbm_capacity_bytes = config.hbm_capacity_bytes() / cores;
  b.fits_in_hbm = b.memory_bytes <= b.hbm_capacity_bytes;
  return b;
}

CostBreakdown PredictStepTime(const JobSpec& spec, const Mesh& mesh) {
  return PredictStepTime(EstimateStepWorkload(spec, mesh), spec.cost_model());
}

absl::Status ValidateCostModel(const CostModelConfig& c) {
  auto bad = [](const char* field, double value, const char* rule) {
    return absl::InvalidArgumentError(absl::StrFormat("cost_model.%s=%g %s", field, value, rule));
  };
  if (!(c.peak_flops_per_chip() > 0))
    return bad("peak_flops_per_chip", c.peak_flops_per_chip(), "must be > 0");
  if (!(c.matmul_efficiency() > 0 && c.matmul_efficiency() <= 1)) {
    return bad("matmul_efficiency", c.matmul_efficiency(), "must be in (0, 1]");
  }
  if (c.hbm_capacity_bytes() <= 0) {
    return bad("hbm_capacity_bytes", static_cast<double>(c.hbm_capacity_bytes()), "must be > 0");
  }
  if (!(c.hbm_bandwidth() > 0)) return bad("hbm_bandwidth", c.hbm_bandwidth(), "must be > 0");
  if (c.ici_links_per_chip() < 1) {
    return bad("ici_links_per_chip", static_cast<double>(c.ici_links_per_chip()), "must be >= 1");
  }
  if (!(c.ici_link_bandwidth() > 0)) {
    return bad("ici_link_bandwidth", c.ici_link_bandwidth(), "must be > 0");
  }
  if (!(c.all_to_all_efficiency() > 0 && c.all_to_all_efficiency() <= 1)) {
    return bad("all_to_all_efficiency", c.all_to_all_efficiency(), "must be in (0, 1]");
  }
  if (!(c.hop_latency() >= 0)) return bad("hop_latency", c.hop_latency(), "must be >= 0");
  if (c.has_attention_logits_bytes() && c.attention_logits_bytes() < 1) {
    return bad("attention_logits_bytes", static_cast<double>(c.attention_logits_bytes()),
               "must be >= 1");
  }
  if (c.activation_bytes() < 1) {
    return bad("activation_bytes", static_cast<double>(c.activation_bytes()), "must be >= 1");
  }
  if (c.gradient_bytes() < 1) {
    return bad("gradient_bytes", static_cast<double>(c.gradient_bytes()), "must be >= 1");
  }
  return absl::OkStatus();
}

}  // namespace openmoe
