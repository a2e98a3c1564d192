// ParamLayout: every parameter of the model as a named view into one flat float buffer.
//
// Parameters, gradients and optimizer state all use this layout, so reductions and checkpoints see
// one buffer. Expert tensors have the expert id as their leading dim (E, ...). Names are global and
// stable: "embedding", "layers.3.attn.wq", "layers.3.moe.experts.wi_0", "logits", ...
// An MoE layer's shared experts (ModelDims::num_shared_experts S > 0) are stored as one gated
// FFN of hidden S * expert_d_ff, "layers.3.moe.shared.{wi_0,wi_1,wo}": shared expert s is
// columns [s * Fe, (s + 1) * Fe) of wi_1 and of each half of wi_0 (OpenMoE form), rows of wo.
//
// Building a layout allocates nothing, so `openmoe plan` can count the 34B config.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/sharding.h"

namespace openmoe {

// What a parameter is part of, for the per-component counts of `openmoe plan`. kSharedExperts:
// model.num_shared_experts, which every token uses (not expert tensors: no expert dim).
enum class Component {
  kEmbedding,
  kAttention,
  kNorm,
  kDenseFfn,
  kExperts,
  kExtraFfn,
  kRouter,
  kLogits,
  kSharedExperts
};
const char* ComponentName(Component c);

enum class InitKind {
  kOnes,              // norm scales
  kNormal,            // N(0, stddev^2)
  kTruncatedNormal,   // variance scaling, fan_in, truncated normal: std = sqrt(scale / fan_in) / .8796
  kScaledNormal,      // variance scaling, fan_in, normal: std = sqrt(scale / fan_in)
};

struct ParamInit {
  InitKind kind = InitKind::kOnes;
  double stddev = 0;   // kNormal
  double scale = 1.0;  // variance scaling
  int64_t fan_in = 1;  // variance scaling
  double extra_divisor = 1.0;  // wq: sqrt(head_dim), folded into the init
};

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;  // what this layout holds; experts: (local experts, ...)
  int64_t offset = 0;          // into the flat buffer
  int64_t size = 0;
  bool is_expert = false;      // leading dim is the expert id
  int64_t first_expert = 0;    // experts: global id of the leading dim's index 0
  Component component = Component::kAttention;
  ParamInit init;
  // The global tensor (checkpoints, init): its shape, its sharding view and the view's logical
  // axes (model/sharding.h), and the view box this layout holds.
  std::vector<int64_t> global_shape;  // experts: (num_experts, ...)
  std::vector<LogicalAxis> axes;      // one per view dim
  ViewBox box;                        // box.view: the view of global_shape
  int model_dim = -1;                 // view dim split over the model axis; -1: replicated on it
  bool model_split() const { return model_dim >= 0; }
};

class ParamLayout {
 public:
  // dims: the whole model's. shard: which experts and which model piece this layout holds (expert
  // tensors hold experts [first_expert, first_expert + num_local_experts) of every MoE layer;
  // model-split tensors piece model_index of model_parts along their model dim).
  explicit ParamLayout(const ModelDims& dims, ParamShard shard = {});

  const std::vector<ParamInfo>& params() const { return params_; }
  int64_t total_size() const { return total_; }
  // Expert tensors sit together at the end of the flat buffer, from this offset: gradient
  // reduction is one call for the shared parameters and one for the experts.
  int64_t expert_offset() const { return expert_offset_; }
  // The parameter with this name; aborts if absent (names are built by this class).
  const ParamInfo& Get(const std::string& name) const;
  const ParamInfo* Find(const std::string& name) const;
  const ModelDims& dims() const { return dims_; }
  // The sizes of the piece this layout holds, what its compute runs on: heads, d_ff, expert_d_ff
  // and padded_vocab_size divided by model_parts (equal to dims() when model_parts is 1).
  const ModelDims& local_dims() const { return local_dims_; }
  int64_t first_expert() const { return first_expert_; }
  int64_t num_local_experts() const { return num_local_experts_; }
  int64_t model_parts() const { return shard_.model_parts; }
  int64_t model_index() const { return shard_.model_index; }
  // First global vocabulary id of this piece's embedding rows and logit columns.
  int64_t vocab_begin() const { return shard_.model_index * local_dims_.padded_vocab_size; }

 private:
  // global: the whole tensor's shape; view/axes: its sharding view (model/sharding.h).
  void Add(std::string name, std::vector<int64_t> global, std::vector<int64_t> view,
           std::vector<LogicalAxis> axes, Component component, ParamInit init);
  ModelDims dims_;
  ModelDims local_dims_;
  ParamShard shard_;
  int64_t first_expert_ = 0;
  int64_t num_local_experts_ = 0;
  std::vector<ParamInfo> params_;
  int64_t total_ = 0;
  int64_t expert_offset_ = 0;
};

// Fills params (layout.total_size()) per the design's init: embedding N(0,1); attention kernels
// variance-scaling(0.1, fan_in, normal), wq further divided by sqrt(head_dim); MLP, expert and
// logits kernels variance-scaling(1.0, fan_in, truncated normal); router N(0, 0.02^2); norm
// scales 1. Each value depends only on (seed, name, element index of the whole tensor, with
// experts at their global ids and model pieces at their global columns): the same for every
// sharding.
void InitParams(const ParamLayout& layout, uint64_t seed, float* params);

}  // namespace openmoe
