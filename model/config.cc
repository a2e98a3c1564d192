#include "model/config.h"

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
          .ignore_padding_tokens = r.ignore_padding_tokens()};
}

}  // namespace openmoe
