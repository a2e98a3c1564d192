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
    case Component::kSharedExperts: return "shared_experts";
  }
  return "?";
}

void ParamLayout::Add(std::string name, std::vector<int64_t> global, std::vector<int64_t> view,
                      std::vector<LogicalAxis> axes, Component component, ParamInit init) {
  OPENMOE_CHECK(view.size() == axes.size());
  ParamInfo p;
  p.name = std::move(name);
  p.global_shape = std::move(global);
  p.component = component;
  p.init = init;
  p.box.view = std::move(view);
  p.box.begin.assign(p.box.view.size(), 0);
  p.box.size = p.box.view;
  for (size_t i = 0; i < axes.size(); ++i) {
    const MeshAxis mesh = MeshAxisOf(axes[i]);
    if (mesh == MeshAxis::kExpert) {
      OPENMOE_CHECK(i == 0);
      p.is_expert = true;
      p.first_expert = first_expert_;
      p.box.begin[i] = first_expert_;
      p.box.size[i] = num_local_experts_;
    } else if (mesh == MeshAxis::kModel && p.model_dim < 0) {
      const int64_t parts = shard_.model_parts, n = p.box.view[i];
      OPENMOE_CHECK_MSG(n % parts == 0, "%s: %s=%lld does not split into %lld model pieces",
                        p.name.c_str(), LogicalAxisName(axes[i]), static_cast<long long>(n),
                        static_cast<long long>(parts));
      p.model_dim = static_cast<int>(i);
      p.box.begin[i] = shard_.model_index * (n / parts);
      p.box.size[i] = n / parts;
    }
  }
  p.axes = std::move(axes);
  // The local shape groups the box's dims as the global shape groups the view's.
  size_t v = 0;
  for (const int64_t g : p.global_shape) {
    OPENMOE_CHECK(v < p.box.view.size());
    int64_t whole = p.box.view[v], local = p.box.size[v];
    for (++v; whole < g && v < p.box.view.size(); ++v) {
      whole *= p.box.view[v];
      local *= p.box.size[v];
    }
    OPENMOE_CHECK_MSG(whole == g, "%s: the sharding view does not refine the shape", p.name.c_str());
    p.shape.push_back(local);
  }
  // Trailing view dims of size 1 (e.g. the OpenMoE wi_0 view (d, 2, 1) when d_ff is 1) belong to
  // the last global dim.
  while (v < p.box.view.size() && p.box.view[v] == 1) ++v;
  OPENMOE_CHECK(v == p.box.view.size());
  p.size = NumElements(p.shape);
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

ParamLayout::ParamLayout(const ModelDims& dims, ParamShard shard)
    : dims_(dims),
      local_dims_(dims),
      shard_(shard),
      first_expert_(shard.first_expert),
      num_local_experts_(shard.num_local_experts < 0 ? dims.num_experts : shard.num_local_experts) {
  OPENMOE_CHECK(first_expert_ >= 0 && first_expert_ + num_local_experts_ <= dims.num_experts);
  OPENMOE_CHECK(shard.model_parts >= 1 && shard.model_index >= 0 &&
                shard.model_index < shard.model_parts);
  const int64_t parts = shard.model_parts;
  local_dims_.num_heads = dims.num_heads / parts;
  local_dims_.d_ff = dims.d_ff / parts;
  local_dims_.expert_d_ff = dims.expert_d_ff / parts;  // and so the shared experts' S * Fe
  local_dims_.padded_vocab_size = dims.padded_vocab_size / parts;
  const int64_t d = dims.d_model, v = dims.padded_vocab_size, a = dims.AttentionWidth();
  const int64_t h = dims.num_heads, hd = dims.head_dim;
  const int64_t f = dims.d_ff, ef = dims.expert_d_ff, e = dims.num_experts;
  const bool pair = dims.ffn_form == FFN_OPENMOE;  // wi_0 holds the (a, b) halves side by side
  using A = LogicalAxis;
  // wi_0's view: (embed, gate_pair, mlp) for the OpenMoE form, (embed, mlp) for SwiGLU.
  auto wi0_view = [&](int64_t ff) { return pair ? std::vector<int64_t>{d, 2, ff} : std::vector<int64_t>{d, ff}; };
  auto wi0_axes = [&]() {
    return pair ? std::vector<A>{A::kEmbed, A::kGatePair, A::kMlp} : std::vector<A>{A::kEmbed, A::kMlp};
  };
  auto with_expert = [&](std::vector<int64_t> view) {
    view.insert(view.begin(), e);
    return view;
  };
  auto with_expert_axis = [](std::vector<A> axes) {
    axes.insert(axes.begin(), A::kExpert);
    return axes;
  };
  Add("embedding", {v, d}, {v, d}, {A::kVocab, A::kEmbed}, Component::kEmbedding, Normal(1.0));
  for (int64_t i = 0; i < dims.num_layers; ++i) {
    const std::string l = absl::StrCat("layers.", i, ".");
    Add(l + "attn_norm.scale", {d}, {d}, {A::kEmbed}, Component::kNorm, Ones());
    const std::vector<A> qkv_axes = {A::kEmbed, A::kHeads, A::kHeadDim};
    Add(l + "attn.wq", {d, a}, {d, h, hd}, qkv_axes, Component::kAttention,
        ScaledNormal(0.1, d, std::sqrt(static_cast<double>(dims.head_dim))));
    Add(l + "attn.wk", {d, a}, {d, h, hd}, qkv_axes, Component::kAttention, ScaledNormal(0.1, d));
    Add(l + "attn.wv", {d, a}, {d, h, hd}, qkv_axes, Component::kAttention, ScaledNormal(0.1, d));
    Add(l + "attn.wo", {a, d}, {h, hd, d}, {A::kHeads, A::kHeadDim, A::kEmbed},
        Component::kAttention, ScaledNormal(0.1, a));
    const bool moe = dims.IsMoeLayer(i);
    if (moe) {
      Add(l + "moe_norm.scale", {d}, {d}, {A::kEmbed}, Component::kNorm, Ones());
      Add(l + "moe.router", {d, e}, {d, e}, {A::kEmbed, A::kRouted}, Component::kRouter,
          Normal(0.02));
      Add(l + "moe.experts.wi_0", {e, d, (pair ? 2 : 1) * ef}, with_expert(wi0_view(ef)),
          with_expert_axis(wi0_axes()), Component::kExperts, Truncated(d));
      Add(l + "moe.experts.wi_1", {e, d, ef}, {e, d, ef}, {A::kExpert, A::kEmbed, A::kMlp},
          Component::kExperts, Truncated(d));
      Add(l + "moe.experts.wo", {e, ef, d}, {e, ef, d}, {A::kExpert, A::kMlp, A::kEmbed},
          Component::kExperts, Truncated(ef));
      if (const int64_t sf = dims.SharedDff(); sf > 0) {
        // Replicated over the expert axis and split on mlp over the model axis, as a dense FFN.
        // wo's fan-in is one shared expert's hidden size: each is initialised as an expert is.
        Add(l + "moe.shared.wi_0", {d, (pair ? 2 : 1) * sf}, wi0_view(sf), wi0_axes(),
            Component::kSharedExperts, Truncated(d));
        Add(l + "moe.shared.wi_1", {d, sf}, {d, sf}, {A::kEmbed, A::kMlp},
            Component::kSharedExperts, Truncated(d));
        Add(l + "moe.shared.wo", {sf, d}, {sf, d}, {A::kMlp, A::kEmbed}, Component::kSharedExperts,
            Truncated(ef));
      }
    }
    if (!moe || dims.extra_dense_ffn) {
      const Component c = moe ? Component::kExtraFfn : Component::kDenseFfn;
      Add(l + "mlp_norm.scale", {d}, {d}, {A::kEmbed}, Component::kNorm, Ones());
      Add(l + "mlp.wi_0", {d, (pair ? 2 : 1) * f}, wi0_view(f), wi0_axes(), c, Truncated(d));
      Add(l + "mlp.wi_1", {d, f}, {d, f}, {A::kEmbed, A::kMlp}, c, Truncated(d));
      Add(l + "mlp.wo", {f, d}, {f, d}, {A::kMlp, A::kEmbed}, c, Truncated(f));
    }
  }
  Add("final_norm.scale", {d}, {d}, {A::kEmbed}, Component::kNorm, Ones());
  Add("logits", {d, v}, {d, v}, {A::kEmbed, A::kVocab}, Component::kLogits, Truncated(d));
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
    auto value = [&](uint64_t i) {
      switch (init.kind) {
        case InitKind::kOnes: return 1.0;
        case InitKind::kNormal: return init.stddev * rng.Normal(i);
        case InitKind::kScaledNormal:
          return std::sqrt(init.scale / init.fan_in) * rng.Normal(i) / init.extra_divisor;
        case InitKind::kTruncatedNormal:
          return std::sqrt(init.scale / init.fan_in) / kTruncatedStd * rng.TruncatedNormal(i);
      }
      return 1.0;
    };
    // Count elements in the global tensor, so that a shard draws its own slice of it.
    ForEachRun(p.box, [&](int64_t b, int64_t w, int64_t n) {
      for (int64_t k = 0; k < n; ++k) out[b + k] = static_cast<float>(value(static_cast<uint64_t>(w + k)));
    });
  }
}

}  // namespace openmoe
