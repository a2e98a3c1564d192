#include "model/config.h"

#include <algorithm>
#include <cmath>

namespace openmoe {

int64_t ModelDims::NumMoeLayers() const {
  int64_t n = 0;
  for (int64_t i = 0; i < num_layers; ++i) n += IsMoeLayer(i) ? 1 : 0;
  return n;
}

ModelDims DimsFromSpec(const JobSpec& spec) {
  const ModelConfig& m = spec.model();
  ModelDims d;
  d.vocab_size = m.vocab_size();
  const int64_t pad = m.vocab_pad_multiple() > 0 ? m.vocab_pad_multiple() : 1;
  d.padded_vocab_size = (m.vocab_size() + pad - 1) / pad * pad;
  d.num_layers = m.num_layers();
  d.d_model = m.d_model();
  d.num_heads = m.num_heads();
  d.head_dim = m.head_dim();
  d.d_ff = m.d_ff();
  d.expert_d_ff = m.expert_d_ff() > 0 ? m.expert_d_ff() : m.d_ff();
  d.num_experts = m.num_experts();
  d.num_shared_experts = m.num_shared_experts();
  d.moe_interval = m.moe_interval();
  d.top_k = spec.router().top_k();
  if (spec.router().selection() == EXPERTS_CHOOSE && m.num_experts() > 0) {
    // Experts choosing: the experts a token gets on average, E * C / group_size (what the
    // parameter, FLOP and memory counts mean by top_k).
    const int64_t capacity = ExpertCapacity(RoutingFromSpec(spec, /*eval=*/false));
    d.top_k = std::max<int64_t>(
        1, std::llround(static_cast<double>(m.num_experts() * capacity) /
                        static_cast<double>(spec.router().group_size())));
  }
  d.extra_dense_ffn = m.extra_dense_ffn();
  d.ffn_form = m.ffn_form();
  d.norm_eps = static_cast<float>(m.rms_norm_eps());
  d.rope_base = static_cast<float>(m.rope_base());
  d.remat = spec.train().remat();
  d.precision =
      spec.train().compute_dtype() == BF16 ? GemmPrecision::kBf16 : GemmPrecision::kFp32;
  return d;
}

RoutingConfig RoutingFromSpec(const JobSpec& spec, bool eval) {
  const RouterConfig& r = spec.router();
  return {.num_experts = spec.model().num_experts(),
          .top_k = r.top_k(),
          .group_size = r.group_size(),
          .capacity_factor = eval ? r.eval_capacity_factor() : r.capacity_factor(),
          .min_capacity = r.min_capacity(),
          .drop_policy = r.drop_policy(),
          .dropless = r.dropless(),
          .jitter_noise = eval ? 0.0 : r.jitter_noise(),
          .jitter_seed = spec.train().seed(),
          .ignore_padding_tokens = r.ignore_padding_tokens(),
          .selection = r.selection(),
          .score_function = r.score_function(),
          .normalize_top_k = r.normalize_top_k(),
          .num_expert_groups = r.num_expert_groups(),
          .groups_per_token = r.groups_per_token(),
          .load_balance_scope = r.load_balance_scope()};
}

}  // namespace openmoe
