#include "parallel/cost/plan.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/check.h"
#include "model/params.h"
#include "parallel/cost/calibration_residuals.h"
#include "parallel/cost/plan_format.h"
#include "parallel/mesh.h"

namespace openmoe {
namespace {

using plan_format::Bytes;
using plan_format::JsonNumber;
using plan_format::JsonString;
using plan_format::Seconds;
using plan_format::Short;
using plan_format::WithCommas;
using plan_format::WithUnit;

// 1 -> "every layer", 4 -> "every 4th layer".
std::string EveryNth(int64_t n) {
  if (n == 1) return "every layer";
  const int64_t tens = n % 100;
  const char* suffix = (tens >= 11 && tens <= 13) ? "th"
                       : n % 10 == 1              ? "st"
                       : n % 10 == 2              ? "nd"
                       : n % 10 == 3              ? "rd"
                                                  : "th";
  return absl::StrCat("every ", n, suffix, " layer");
}

void AppendCostText(const PlanReport& r, std::string* s) {
  const CostModelConfig& c = r.cost_config;
  const CostBreakdown& b = r.cost;
  absl::StrAppendFormat(s, "\npredicted step on a TPU v3 slice (cost model)\n");
  absl::StrAppendFormat(
      s, "  chip              %s bf16 x %.2f matmul efficiency; HBM %s at %s; %d cores\n",
      WithUnit(c.peak_flops_per_chip(), "FLOP/s"), c.matmul_efficiency(),
      Bytes(c.hbm_capacity_bytes()), WithUnit(c.hbm_bandwidth(), "B/s"), b.cores_per_chip);
  absl::StrAppendFormat(s, "  MoE               %s dispatch, %s, all-to-all at %.2f of link bandwidth\n",
                        c.dispatch() == DISPATCH_EINSUM ? "one-hot einsum" : "gather",
                        c.remat() == REMAT_FULL        ? "full remat"
                        : c.remat() == REMAT_ATTENTION ? "attention remat"
                                                       : "no remat",
                        c.all_to_all_efficiency());
  absl::StrAppendFormat(
      s, "  interconnect      %dx%d %s, %d ICI links/chip at %s per direction, %s per hop\n",
      r.torus_x, r.torus_y, c.wraparound() ? "torus" : "mesh (no wraparound)",
      c.ici_links_per_chip(), WithUnit(c.ici_link_bandwidth(), "B/s"), Seconds(c.hop_latency()));
  absl::StrAppendFormat(s,
                        "  step time         %s  (calibrated on %s: residuals %+.0f%%..%+.0f%%; "
                        "checked, not fitted, on %s's small models: %+.0f%%..%+.0f%%)\n",
                        Seconds(b.step_seconds), calibration::kSource,
                        100 * calibration::kMinResidual, 100 * calibration::kMaxResidual,
                        calibration::kCheckSource, 100 * calibration::kCheckMinResidual,
                        100 * calibration::kCheckMaxResidual);
  absl::StrAppendFormat(
      s,
      "  gradient overlap  %s: %s overlapped, %s unoverlapped; the gradient all-reduce (%s "
      "blocking) in %d bucket%s of %s (%s) behind the %s backward, %s of it exposed\n",
      b.overlap_grad_reduce ? "on (train.overlap_grad_reduce), the prediction"
                            : "off (train.overlap_grad_reduce false)",
      Seconds(b.overlapped_step_seconds), Seconds(b.unoverlapped_step_seconds),
      Seconds(b.grad_reduce_seconds), b.grad_buckets, b.grad_buckets == 1 ? "" : "s",
      Bytes(static_cast<int64_t>(b.grad_bucket_bytes)), Seconds(b.grad_reduce_bucketed_seconds),
      Seconds(b.backward_seconds), Seconds(b.grad_reduce_exposed_seconds));
  auto part = [&](const char* name, double v, const std::string& note) {
    absl::StrAppendFormat(s, "    %-15s %10s %5.1f%%%s\n", name, Seconds(v),
                          b.step_seconds > 0 ? 100 * v / b.step_seconds : 0.0, note);
  };
  part("compute", b.compute_seconds,
       absl::StrCat("  ", Short(b.model_flops_per_chip), " model FLOPs per chip",
                    b.dispatch_flops_per_chip > 0
                        ? absl::StrCat(" + ", Short(b.dispatch_flops_per_chip), " dispatch einsums")
                        : std::string(),
                    b.capacity_flops_per_chip != 0
                        ? absl::StrCat(b.capacity_flops_per_chip > 0 ? " + " : " - ",
                                       Short(std::abs(b.capacity_flops_per_chip)),
                                       " expert capacity")
                        : std::string(),
                    b.remat_flops_per_chip > 0
                        ? absl::StrCat(" + ", Short(b.remat_flops_per_chip), " remat")
                        : std::string(),
                    b.mxu_padding_flops_per_chip > 0
                        ? absl::StrCat(" + ", Short(b.mxu_padding_flops_per_chip),
                                       " MXU tile padding")
                        : std::string(),
                    b.attention_extra_seconds > 0
                        ? absl::StrCat("; + ", Seconds(b.attention_extra_seconds),
                                       " as the attention matmuls take ",
                                       Seconds(b.attention_matmul_seconds),
                                       b.attention_hbm_bound ? " (HBM-bound)"
                                                             : " (MXU tiles part empty)")
                        : std::string()));
  part("memory-bound", b.memory_seconds,
       absl::StrCat("  ", Bytes(static_cast<int64_t>(b.hbm_bytes_per_chip)),
                    " elementwise + optimizer HBM traffic per chip"));
  part("all-to-all", b.all_to_all_seconds,
       b.all_to_all_hidden_seconds > 0
           ? absl::StrCat("  (", Seconds(b.all_to_all_hidden_seconds), " hidden behind attention)")
           : std::string(c.overlap_all_to_all_with_attention() ? "" : "  (not overlapped)"));
  part(b.overlap_grad_reduce ? "all-reduce (*)" : "all-reduce", b.all_reduce_seconds,
       b.model_all_reduce_seconds > 0
           ? absl::StrCat("  (", Seconds(b.model_all_reduce_seconds), " of it the model axis)")
           : std::string());
  if (b.overlap_grad_reduce) {
    absl::StrAppendFormat(s,
                          "    (*) blocking; overlapped, only %s of its gradients' %s is "
                          "exposed: the parts sum to the unoverlapped step\n",
                          Seconds(b.grad_reduce_exposed_seconds), Seconds(b.grad_reduce_seconds));
  }
  absl::StrAppendFormat(s, "  throughput        %s tokens/s, MFU %.1f%%\n",
                        WithCommas(static_cast<int64_t>(std::llround(b.tokens_per_second))),
                        100 * b.mfu);
  absl::StrAppendFormat(s, "  collectives\n    %-24s %5s %6s  %-26s %10s %5s %9s %9s\n", "kind",
                        "group", "groups", "placement of one group", "bytes/chip", "calls",
                        "per call", "per step");
  for (const CollectiveCost& cc : b.collectives) {
    absl::StrAppendFormat(s, "    %-24s %5d %6d  %-26s %10s %5d %9s %9s\n",
                          CollectiveKindName(cc.kind), cc.group_size, cc.num_groups, cc.placement,
                          Bytes(static_cast<int64_t>(cc.bytes_per_chip)), cc.calls,
                          Seconds(cc.seconds_per_call), Seconds(cc.seconds));
  }
  absl::StrAppendFormat(
      s,
      "  HBM per core      %s state (a replica per core) + %s activations (one microbatch, "
      "1/%d of the chip's, estimate) = %s of %s: %s\n",
      Bytes(b.state_bytes), Bytes(b.activation_bytes), b.cores_per_chip, Bytes(b.memory_bytes),
      Bytes(b.hbm_capacity_bytes), b.fits_in_hbm ? "fits" : "does NOT fit");
}

void AppendCostJson(const PlanReport& r, std::string* s) {
  const CostModelConfig& c = r.cost_config;
  const CostBreakdown& b = r.cost;
  absl::StrAppendFormat(
      s,
      "  \"cost_model\": {\n    \"config\": {\"peak_flops_per_chip\": %s, "
      "\"matmul_efficiency\": %s, \"hbm_capacity_bytes\": %d, \"hbm_bandwidth\": %s, "
      "\"ici_links_per_chip\": %d, \"ici_link_bandwidth\": %s, \"hop_latency\": %s, "
      "\"wraparound\": %s, \"activation_bytes\": %d, \"gradient_bytes\": %d, "
      "\"padded_dispatch\": %s, \"overlap_all_to_all_with_attention\": %s, \"dispatch\": %s, "
      "\"remat\": %s, \"all_to_all_efficiency\": %s, \"attention_logits_bytes\": %d, "
      "\"attention_position_bias\": %s, \"encoder_layers\": %d, \"decoder_target_length\": %d, "
      "\"cores_per_chip\": %d},\n"
      "    \"calibration\": {\"source\": %s, \"rows\": %d, \"min_residual\": %s, "
      "\"max_residual\": %s, \"check_source\": %s, \"check_rows\": %d, "
      "\"check_min_residual\": %s, \"check_max_residual\": %s},\n",
      JsonNumber(c.peak_flops_per_chip()), JsonNumber(c.matmul_efficiency()),
      c.hbm_capacity_bytes(), JsonNumber(c.hbm_bandwidth()), c.ici_links_per_chip(),
      JsonNumber(c.ici_link_bandwidth()), JsonNumber(c.hop_latency()),
      c.wraparound() ? "true" : "false", c.activation_bytes(), c.gradient_bytes(),
      c.padded_dispatch() ? "true" : "false",
      c.overlap_all_to_all_with_attention() ? "true" : "false",
      JsonString(DispatchImpl_Name(c.dispatch())), JsonString(Remat_Name(c.remat())),
      JsonNumber(c.all_to_all_efficiency()), c.attention_logits_bytes(),
      c.attention_position_bias() ? "true" : "false", c.encoder_layers(),
      c.decoder_target_length(), b.cores_per_chip,
      JsonString(calibration::kSource),
      calibration::kRows, JsonNumber(calibration::kMinResidual),
      JsonNumber(calibration::kMaxResidual), JsonString(calibration::kCheckSource),
      calibration::kCheckRows, JsonNumber(calibration::kCheckMinResidual),
      JsonNumber(calibration::kCheckMaxResidual));
  absl::StrAppendFormat(
      s,
      "    \"step_seconds\": %s,\n"
      "    \"unoverlapped_step_seconds\": %s,\n    \"overlapped_step_seconds\": %s,\n"
      "    \"grad_reduce\": {\"overlap\": %s, \"bucket_bytes\": %s, \"buckets\": %d, "
      "\"backward_seconds\": %s, \"blocking_seconds\": %s, \"bucketed_seconds\": %s, "
      "\"exposed_seconds\": %s},\n"
      "    \"breakdown\": {\"compute\": %s, \"memory\": %s, "
      "\"all_to_all\": %s, \"all_to_all_hidden\": %s, \"all_reduce\": %s, "
      "\"model_all_reduce\": %s},\n"
      "    \"tokens_per_second\": %s,\n    \"mfu\": %s,\n    \"model_flops_per_chip\": %s,\n"
      "    \"dispatch_flops_per_chip\": %s,\n    \"capacity_flops_per_chip\": %s,\n"
      "    \"remat_flops_per_chip\": %s,\n"
      "    \"mxu_padding_flops_per_chip\": %s,\n    \"attention_matmul_seconds\": %s,\n"
      "    \"attention_extra_seconds\": %s,\n    \"attention_hbm_bound\": %s,\n"
      "    \"hbm_traffic_bytes_per_chip\": %s,\n    \"collectives\": [",
      JsonNumber(b.step_seconds), JsonNumber(b.unoverlapped_step_seconds),
      JsonNumber(b.overlapped_step_seconds), b.overlap_grad_reduce ? "true" : "false",
      JsonNumber(b.grad_bucket_bytes), b.grad_buckets, JsonNumber(b.backward_seconds),
      JsonNumber(b.grad_reduce_seconds), JsonNumber(b.grad_reduce_bucketed_seconds),
      JsonNumber(b.grad_reduce_exposed_seconds), JsonNumber(b.compute_seconds),
      JsonNumber(b.memory_seconds),
      JsonNumber(b.all_to_all_seconds), JsonNumber(b.all_to_all_hidden_seconds),
      JsonNumber(b.all_reduce_seconds), JsonNumber(b.model_all_reduce_seconds),
      JsonNumber(b.tokens_per_second), JsonNumber(b.mfu),
      JsonNumber(b.model_flops_per_chip), JsonNumber(b.dispatch_flops_per_chip),
      JsonNumber(b.capacity_flops_per_chip),
      JsonNumber(b.remat_flops_per_chip), JsonNumber(b.mxu_padding_flops_per_chip),
      JsonNumber(b.attention_matmul_seconds), JsonNumber(b.attention_extra_seconds),
      b.attention_hbm_bound ? "true" : "false",
      JsonNumber(b.hbm_bytes_per_chip));
  bool first = true;
  for (const CollectiveCost& cc : b.collectives) {
    absl::StrAppendFormat(
        s,
        "%s\n      {\"kind\": %s, \"group_size\": %d, \"num_groups\": %d, \"placement\": %s, "
        "\"bytes_per_chip\": %s, \"calls\": %d, \"seconds_per_call\": %s, \"seconds\": %s}",
        first ? "" : ",", JsonString(CollectiveKindName(cc.kind)), cc.group_size, cc.num_groups,
        JsonString(cc.placement), JsonNumber(cc.bytes_per_chip), cc.calls,
        JsonNumber(cc.seconds_per_call), JsonNumber(cc.seconds));
    first = false;
  }
  absl::StrAppendFormat(
      s,
      "\n    ],\n    \"memory_per_core\": {\"cores_per_chip\": %d, \"state_bytes\": %d, "
      "\"activation_bytes\": %d, \"total_bytes\": %d, \"hbm_capacity_bytes\": %d, "
      "\"fits\": %s}\n  }\n",
      b.cores_per_chip, b.state_bytes, b.activation_bytes, b.memory_bytes, b.hbm_capacity_bytes,
      b.fits_in_hbm ? "true" : "false");
}

}  // namespace

PlanReport ComputePlan(const JobSpec& spec) {
  PlanReport r;
  r.name = spec.model().name();
  r.dims = DimsFromSpec(spec);
  r.num_moe_layers = r.dims.NumMoeLayers();

  const TopologyConfig& t = spec.topology();
  r.chip = t.chip();
  r.num_chips = t.num_chips();
  r.torus_x = t.torus_x();
  r.torus_y = t.torus_y();
  r.chips_per_host = t.chips_per_host();
  r.num_hosts = (r.num_chips + r.chips_per_host - 1) / r.chips_per_host;
  r.expert_parallel = spec.mesh().expert_parallel();
  r.model_parallel = spec.mesh().model_parallel();
  r.data_parallel = r.num_chips / r.model_parallel;
  r.experts_per_chip = r.dims.num_experts / r.expert_parallel;
  r.expert_replicas = r.data_parallel / r.expert_parallel;

  const TrainConfig& tr = spec.train();
  r.batch_rows = tr.batch_rows();
  r.seq_len = tr.seq_len();
  r.microbatches = tr.microbatches();
  r.tokens_per_step = r.batch_rows * r.seq_len;
  r.tokens_per_chip_microbatch = r.tokens_per_step / (r.data_parallel * r.microbatches);
  if (r.dims.num_experts > 0) {
    r.group_size = spec.router().group_size();
    r.experts_choose = spec.router().selection() == EXPERTS_CHOOSE;
    r.groups_per_chip_microbatch = r.tokens_per_chip_microbatch / r.group_size;
  }

  const ParamLayout layout(r.dims);
  r.params = CountParams(layout);
  r.flops_per_token = TrainingFlopsPerToken(layout, r.seq_len);
  r.flops_per_step = r.flops_per_token.total * static_cast<double>(r.tokens_per_step);
  r.flops_per_chip_step = r.flops_per_step / static_cast<double>(r.num_chips);
  // A chip's piece: model-split parameters / model_parallel (every piece is the same size).
  r.memory = MemoryPerChip(ParamLayout(r.dims, ParamShard{.model_parts = r.model_parallel}), spec,
                           r.expert_parallel);
  r.optimizer = spec.train().optimizer();
  r.cost_config = spec.cost_model();
  r.cost_config.set_activation_bytes(ActivationBytes(spec));  // as the cost model used it
  r.cost_config.set_remat(EffectiveRemat(spec));
  r.cost_config.set_attention_logits_bytes(AttentionLogitsBytes(spec));
  // The slice as one process hosting every chip: the world size does not change where chips sit
  // on the torus. The spec is valid here, so the mesh is too.
  const absl::StatusOr<Mesh> slice = MakeMesh(spec, /*world_size=*/1, /*rank=*/0);
  OPENMOE_CHECK_MSG(slice.ok(), "%s", std::string(slice.status().message()).c_str());
  r.cost = PredictStepTime(spec, *slice);
  return r;
}

void PrintPlanText(const PlanReport& r, std::ostream& out) {
  const ModelDims& d = r.dims;
  std::string s = absl::StrFormat("openmoe plan: %s\n\n", r.name);
  absl::StrAppendFormat(&s, "model\n");
  absl::StrAppendFormat(&s, "  layers            %d", d.num_layers);
  if (d.num_experts > 0) {
    const std::string choice =
        r.experts_choose ? absl::StrFormat("experts choose, %d per token on average", d.top_k)
                         : absl::StrFormat("top-%d", d.top_k);
    absl::StrAppendFormat(&s, " (%d MoE: %s, %d experts, %s, %s)", r.num_moe_layers,
                          EveryNth(d.moe_interval), d.num_experts, choice,
                          d.extra_dense_ffn ? "with extra dense FFN" : "no extra dense FFN");
  } else {
    s += " (dense)";
  }
  absl::StrAppendFormat(&s, "\n  d_model           %d\n", d.d_model);
  absl::StrAppendFormat(&s, "  attention         %d heads x %d\n", d.num_heads, d.head_dim);
  absl::StrAppendFormat(&s, "  d_ff              %d (experts %d), %s\n", d.d_ff, d.expert_d_ff,
                        d.ffn_form == FFN_OPENMOE ? "FFN_OPENMOE" : "FFN_SWIGLU");
  if (d.num_shared_experts > 0) {
    absl::StrAppendFormat(&s,
                          "  shared experts    %d per MoE layer (d_ff %d each), every token, "
                          "added to the routed output\n",
                          d.num_shared_experts, d.expert_d_ff);
  }
  absl::StrAppendFormat(&s, "  vocab             %d (padded %d)\n\n", d.vocab_size,
                        d.padded_vocab_size);

  absl::StrAppendFormat(&s, "mesh\n");
  absl::StrAppendFormat(&s, "  chips             %d %s, torus %dx%d, %d chips/host (%d hosts)\n",
                        r.num_chips, r.chip, r.torus_x, r.torus_y, r.chips_per_host, r.num_hosts);
  if (r.model_parallel == 1) {
    absl::StrAppendFormat(&s, "  data_parallel     %d (every chip holds a data shard)\n",
                          r.data_parallel);
  } else {
    absl::StrAppendFormat(&s, "  data_parallel     %d (data shards, one per model group)\n",
                          r.data_parallel);
  }
  absl::StrAppendFormat(&s, "  expert_parallel   %d", r.expert_parallel);
  if (d.num_experts > 0) {
    const char* unit = r.model_parallel == 1 ? "chip" : "shard";
    absl::StrAppendFormat(
        &s, " (%d expert groups; %d expert%s per chip per MoE layer, each on %d %s%s)",
        r.expert_replicas, r.experts_per_chip, r.experts_per_chip == 1 ? "" : "s",
        r.expert_replicas, unit, r.expert_replicas == 1 ? "" : "s");
  }
  absl::StrAppendFormat(&s, "\n  model_parallel    %d", r.model_parallel);
  if (r.model_parallel == 1) {
    s += " (no tensor parallelism: every chip holds whole parameters)";
  } else {
    absl::StrAppendFormat(
        &s,
        " (model groups of %d consecutive chips; each holds 1/%d of heads, mlp and vocabulary, "
        "router and norms whole)",
        r.model_parallel, r.model_parallel);
  }
  s += "\n\n";

  absl::StrAppendFormat(&s, "batch\n");
  absl::StrAppendFormat(&s, "  per step          %d rows x %d = %s tokens, %d microbatch%s\n",
                        r.batch_rows, r.seq_len, WithCommas(r.tokens_per_step), r.microbatches,
                        r.microbatches == 1 ? "" : "es");
  absl::StrAppendFormat(&s, "  per %s         %s tokens per microbatch",
                        r.model_parallel == 1 ? "chip " : "shard",
                        WithCommas(r.tokens_per_chip_microbatch));
  if (d.num_experts > 0) {
    absl::StrAppendFormat(&s, " = %d routing group%s of %d", r.groups_per_chip_microbatch,
                          r.groups_per_chip_microbatch == 1 ? "" : "s", r.group_size);
  }
  s += "\n\n";

  absl::StrAppendFormat(&s, "parameters          %25s %25s\n", "total", "activated");
  auto row = [&s](const std::string& name, int64_t total, int64_t activated) {
    absl::StrAppendFormat(&s, "  %-17s %16s %8s %16s %8s\n", name, WithCommas(total),
                          absl::StrCat("(", Short(static_cast<double>(total)), ")"),
                          WithCommas(activated),
                          absl::StrCat("(", Short(static_cast<double>(activated)), ")"));
  };
  for (Component c : kAllComponents) {
    const ComponentCount& cc = r.params[c];
    if (cc.total > 0) row(ComponentName(c), cc.total, cc.activated);
  }
  row("total", r.params.total, r.params.activated);
  row("non-embedding", r.params.non_embedding_total, r.params.non_embedding_activated);
  s += "  (activated: experts count top_k/num_experts of their parameters, the rest fully (shared\n"
       "   experts too), the input embedding included; non-embedding leaves out the input\n"
       "   embedding only)\n\n";

  absl::StrAppendFormat(&s, "training FLOPs\n");
  absl::StrAppendFormat(&s, "  per token         %s = 6 x %s matmul params + %s attention\n",
                        Short(r.flops_per_token.total), WithCommas(r.params.activated_matmul),
                        Short(r.flops_per_token.attention));
  absl::StrAppendFormat(&s, "  per step          %s (%s per chip)\n\n", Short(r.flops_per_step),
                        Short(r.flops_per_chip_step));

  absl::StrAppendFormat(&s, "memory per chip (fp32%s)\n",
                        r.model_parallel == 1 ? "" : ", its piece of the model-split parameters");
  absl::StrAppendFormat(&s, "  parameters        %s bytes (%s)\n",
                        WithCommas(r.memory.params_bytes), Bytes(r.memory.params_bytes));
  absl::StrAppendFormat(&s, "  gradients         %s bytes (%s)\n", WithCommas(r.memory.grads_bytes),
                        Bytes(r.memory.grads_bytes));
  absl::StrAppendFormat(&s, "  %s   %s bytes (%s)\n",
                        r.optimizer == OPTIMIZER_ADAMW ? "adamw m and v  " : "adafactor state",
                        WithCommas(r.memory.optimizer_bytes), Bytes(r.memory.optimizer_bytes));
  absl::StrAppendFormat(&s, "  total             %s bytes (%s)\n", WithCommas(r.memory.total_bytes),
                        Bytes(r.memory.total_bytes));
  AppendCostText(r, &s);
  out << s;
}

void PrintPlanJson(const PlanReport& r, std::ostream& out) {
  const ModelDims& d = r.dims;
  std::string s = "{\n";
  absl::StrAppendFormat(&s, "  \"name\": %s,\n", JsonString(r.name));
  absl::StrAppendFormat(
      &s,
      "  \"model\": {\"num_layers\": %d, \"num_moe_layers\": %d, \"d_model\": %d, \"num_heads\": "
      "%d, \"head_dim\": %d, \"d_ff\": %d, \"expert_d_ff\": %d, \"num_experts\": %d, "
      "\"num_shared_experts\": %d, \"top_k\": "
      "%d, \"moe_interval\": %d, \"extra_dense_ffn\": %s, \"ffn_form\": %s, \"vocab_size\": %d, "
      "\"padded_vocab_size\": %d},\n",
      d.num_layers, r.num_moe_layers, d.d_model, d.num_heads, d.head_dim, d.d_ff, d.expert_d_ff,
      d.num_experts, d.num_shared_experts, d.top_k, d.moe_interval,
      d.extra_dense_ffn ? "true" : "false", JsonString(FfnForm_Name(d.ffn_form)), d.vocab_size,
      d.padded_vocab_size);
  absl::StrAppendFormat(
      &s,
      "  \"mesh\": {\"chip\": %s, \"num_chips\": %d, \"torus_x\": %d, \"torus_y\": %d, "
      "\"chips_per_host\": %d, \"num_hosts\": %d, \"expert_parallel\": %d, \"data_parallel\": %d, "
      "\"model_parallel\": %d, \"experts_per_chip\": %d, \"expert_replicas\": %d},\n",
      JsonString(r.chip), r.num_chips, r.torus_x, r.torus_y, r.chips_per_host, r.num_hosts,
      r.expert_parallel, r.data_parallel, r.model_parallel, r.experts_per_chip,
      r.expert_replicas);
  absl::StrAppendFormat(
      &s,
      "  \"batch\": {\"batch_rows\": %d, \"seq_len\": %d, \"microbatches\": %d, "
      "\"tokens_per_step\": %d, \"tokens_per_chip_microbatch\": %d, \"group_size\": %d, "
      "\"groups_per_chip_microbatch\": %d},\n",
      r.batch_rows, r.seq_len, r.microbatches, r.tokens_per_step, r.tokens_per_chip_microbatch,
      r.group_size, r.groups_per_chip_microbatch);
  s += "  \"params\": {\n    \"by_component\": {";
  bool first = true;
  for (Component c : kAllComponents) {
    const ComponentCount& cc = r.params[c];
    absl::StrAppendFormat(&s, "%s\n      %s: {\"total\": %d, \"activated\": %d}", first ? "" : ",",
                          JsonString(ComponentName(c)), cc.total, cc.activated);
    first = false;
  }
  absl::StrAppendFormat(
      &s,
      "\n    },\n    \"total\": %d,\n    \"activated\": %d,\n    \"non_embedding_total\": %d,\n"
      "    \"non_embedding_activated\": %d,\n    \"activated_matmul\": %d\n  },\n",
      r.params.total, r.params.activated, r.params.non_embedding_total,
      r.params.non_embedding_activated, r.params.activated_matmul);
  absl::StrAppendFormat(
      &s,
      "  \"flops\": {\"per_token\": %s, \"per_token_matmul\": %s, \"per_token_attention\": %s, "
      "\"per_step\": %s, \"per_chip_step\": %s},\n",
      JsonNumber(r.flops_per_token.total), JsonNumber(r.flops_per_token.matmul),
      JsonNumber(r.flops_per_token.attention), JsonNumber(r.flops_per_step),
      JsonNumber(r.flops_per_chip_step));
  absl::StrAppendFormat(
      &s,
      "  \"memory_per_chip\": {\"params\": %d, \"optimizer_state\": %d, \"params_bytes\": %d, "
      "\"grads_bytes\": %d, \"optimizer_bytes\": %d, \"total_bytes\": %d},\n",
      r.memory.params, r.memory.optimizer_state, r.memory.params_bytes, r.memory.grads_bytes,
      r.memory.optimizer_bytes, r.memory.total_bytes);
  AppendCostJson(r, &s);
  s += "}\n";
  out << s;
}

}  // namespace openmoe
