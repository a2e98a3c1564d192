#include "model/params.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace openmoe {

const char* ComponentName(Component c) {
  switch (c) {
    case Component::kEmbedding: return "embedding";
    case Component::kAttention: return "attention";
    case Component::kNorm: return "norms";
    case Component::kDenseFfn: return "dense_ffn";
    case Component::kExperts: return "experts";
    case Component::kExtraFfn: return "extra_ffn";
    case Component::kRouter: return "router";
    case Component::kLogits: return "logits";
  }
  return "?";
}

void ParamLayout::Add(std::string name, std::vector<int64_t> shape, Component component,
                      ParamInit init, bool is_expert) {
  ParamInfo p;
  p.name = std::move(name);
  p.size = NumElements(shape);
  p.shape = std::move(shape);
  p.is_expert = is_expert;
  p.first_expert = is_expert ? first_expert_ : 0;
  p.component = component;
  p.init = init;
  params_.push_back(std::move(p));
}

namespace {

ParamInit Ones() { return {}; }
ParamInit Normal(double stddev) { return {.kind = InitKind::kNormal, .stddev = stddev}; }
ParamInit ScaledNormal(double scale, int64_t fan_in, double divisor = 1.0) {
  return {.kind = InitKind::kScaledNormal, .scale = scale, .fan_in = fan_in, .extra_divisor = divisor};
}
ParamInit Truncated(int64_t fan_in) {
  return {.kind = InitKind::kTruncatedNormal, .scale = 1.0, .fan_in = fan_in};
}

}  // namespace

ParamLayout::ParamLayout(const ModelDims& dims, ExpertShard shard)
    : dims_(dims),
      first_expert_(shard.first_expert),
      num_local_experts_(shard.num_local_experts < 0 ? dims.num_experts : shard.num_local_experts) {
  OPENMOE_CHECK(first_expert_ >= 0 && first_expert_ + num_local_experts_ <= dims.num_experts);
  const int64_t d = dims.d_model, v = dims.padded_vocab_size, a = dims.AttentionWidth();
  const int64_t f = dims.d_ff, ef = dims.expert_d_ff, e = dims.num_experts;
  const int64_t le = num_local_experts_;
  const int64_t wi0 = dims.ffn_form == FFN_OPENMOE ? 2 * f : f;
  const int64_t ewi0 = dims.ffn_form == FFN_OPENMOE ? 2 * ef : ef;
  Add("embedding", {v, d}, Component::kEmbedding, Normal(1.0));
  for (int64_t i = 0; i < dims.num_layers; ++i) {
    const std::string l = absl::StrCat("layers.", i, ".");
    Add(l + "attn_norm.scale", {d}, Component::kNorm, Ones());
    Add(l + "attn.wq", {d, a}, Component::kAttention,
        ScaledNormal(0.1, d, std::sqrt(static_cast<double>(dims.head_dim))));
    Add(l + "attn.wk", {d, a}, Component::kAttention, ScaledNormal(0.1, d));
    Add(l + "attn.wv", {d, a}, Component::kAttention, ScaledNormal(0.1, d));
    Add(l + "attn.wo", {a, d}, Component::kAttention, ScaledNormal(0.1, a));
    const bool moe = dims.IsMoeLayer(i);
    if (moe) {
      Add(l + "moe_norm.scale", {d}, Component::kNorm, Ones());
      Add(l + "moe.router", {d, e}, Component::kRouter, Normal(0.02));
      Add(l + "moe.experts.wi_0", {le, d, ewi0}, Component::kExperts, Truncated(d), true);
      Add(l + "moe.experts.wi_1", {le, d, ef}, Component::kExperts, Truncated(d), true);
      Add(l + "moe.experts.wo", {le, ef, d}, Component::kExperts, Truncated(ef), true);
    }
    if (!moe || dims.extra_dense_ffn) {
      const Component c = moe ? Component::kExtraFfn : Component::kDenseFfn;
      Add(l + "mlp_norm.scale", {d}, Component::kNorm, Ones());
      Add(l + "mlp.wi_0", {d, wi0}, c, Truncated(d));
      Add(l + "mlp.wi_1", {d, f}, c, Truncated(d));
      Add(l + "mlp.wo", {f, d}, c, Truncated(f));
    }
  }
  Add("final_norm.scale", {d}, Component::kNorm, Ones());
  Add("logits", {d, v}, Component::kLogits, Truncated(d));
  // Offsets: shared parameters first, in order, then the expert tensors.
  total_ = 0;
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) expert_offset_ = total_;
    for (ParamInfo& p : params_) {
      if (p.is_expert != (pass == 1)) continue;
      p.offset = total_;
      total_ += (p.size + 15) / 16 * 16;  // 64-byte aligned tensors
    }
  }
}

const ParamInfo* ParamLayout::Find(const std::string& name) const {
  for (const ParamInfo& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

const ParamInfo& ParamLayout::Get(const std::string& name) const {
  const ParamInfo* p = Find(name);
  OPENMOE_CHECK_MSG(p != nullptr, "no parameter named %s", name.c_str());
  return *p;
}

void InitParams(const ParamLayout& layout, uint64_t seed, float* params) {
  // JAX's truncated normal on [-2, 2] has std 0.8796 of the untruncated one; dividing by it makes
  // the truncated distribution's std the variance-scaling target, as flax's initialisers do.
  constexpr double kTruncatedStd = 0.87962566103423978;
  for (const ParamInfo& p : layout.params()) {
    float* out = params + p.offset;
    const CounterRng rng(seed, StreamId(p.name));
    const ParamInit& init = p.init;
    // Experts: count elements from the global tensor's start, so a shard draws its own slice.
    const int64_t per_expert = p.is_expert && p.shape[0] > 0 ? p.size / p.shape[0] : 0;
    const int64_t base = p.first_expert * per_expert;
    for (int64_t local = 0; local < p.size; ++local) {
      const uint64_t i = static_cast<uint64_t>(base + local);
      double value = 1.0;
      switch (init.kind) {
        case InitKind::kOnes: value = 1.0; break;
        case InitKind::kNormal: value = init.stddev * rng.Normal(i); break;
        case InitKind::kScaledNormal:
          value = std::sqrt(init.scale / init.fan_in) * rng.Normal(i) / init.extra_divisor;
          break;
        case InitKind::kTruncatedNormal:
          value = std::sqrt(init.scale / init.fan_in) / kTruncatedStd * rng.TruncatedNormal(i);
          break;
      }
      out[local] = static_cast<float>(value);
    }
  }
}

}  // namespace openmoe
