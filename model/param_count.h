// Parameter counts, training FLOPs per token and parameter memory per chip, all computed from a
// ParamLayout (which allocates nothing), so `openmoe plan` can size the 34B config.
//
// Counts use each tensor's true element count (ParamInfo::size), not the 16-float alignment
// padding of the flat buffer.
//
// Activated parameters are those one token uses in a forward pass:
//   - expert tensors count top_k / num_experts of their size: the top_k experts a token is routed
//     to (before capacity drops; a dropped choice uses none, so this is an upper bound);
//   - everything else counts fully: the shared experts (model.num_shared_experts; every token
//     passes through all of them, so one has 4 d Fe parameters per MoE layer in the OpenMoE
//     form, wi_0 being d x 2Fe, and 3 d Fe in the SwiGLU form, in both counts), and INCLUDING
//     the input embedding (a token reads one row of it, but by the usual convention the
//     embedding is counted, so a dense model's activated count equals its total).
// The "non-embedding" figures leave out the input embedding table only; the untied logits
// projection is a matmul every token pays for and stays in.
//
// Training FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B):
//   6 * N + 12 * L * H * hd * S
// where N = activated parameters of every matmul: attention wq wk wv wo, dense and extra FFNs, the
// top_k experts, the shared experts, the router and the logits; not the embedding lookup nor the
// norm scales.
// 6 = 2 (multiply + add) * 3 (the forward matmul and the two backward ones). The second term is
// the attention scores and the weighted sum of values (QK^T and AV: 2 * 2 * S * hd per head per
// layer forward, times 3), over the full S x S matrix, not halved for the causal mask, as PaLM
// counts it. Elementwise work (norms, RoPE, softmax, activations) is not counted.
#pragma once

#include <cstdint>

#include "model/params.h"
#include "proto/job.pb.h"

namespace openmoe {

inline constexpr Component kAllComponents[] = {
    Component::kEmbedding, Component::kAttention, Component::kNorm,
    Component::kDenseFfn,  Component::kExperts,   Component::kExtraFfn,
    Component::kRouter,    Component::kLogits,    Component::kSharedExperts};
inline constexpr int kNumComponents = sizeof(kAllComponents) / sizeof(kAllComponents[0]);

struct ComponentCount {
  int64_t total = 0;
  int64_t activated = 0;
};

struct ParamCounts {
  ComponentCount by_component[kNumComponents];  // indexed by static_cast<int>(Component)
  int64_t total = 0;
  int64_t activated = 0;
  int64_t non_embedding_total = 0;
  int64_t non_embedding_activated = 0;
  int64_t activated_matmul = 0;  // N of the FLOPs formula
  int64_t expert_total = 0;      // parameters in expert tensors (all experts)

  const ComponentCount& operator[](Component c) const { return by_component[static_cast<int>(c)]; }
};

ParamCounts CountParams(const ParamLayout& layout);

struct TrainingFlops {
  double matmul = 0;     // 6 * N
  double attention = 0;  // 12 * L * H * hd * S
  double total = 0;      // per token: forward + backward
};

// Per token of a training step with rows of `seq_len` tokens. Depends only on layout.dims(), so a
// rank's expert shard gives the whole model's figure.
TrainingFlops TrainingFlopsPerToken(const ParamLayout& layout, int64_t seq_len);

// fp32 parameters, gradients and Adafactor second-moment state held by one chip. Non-expert
// parameters are replicated on every chip; each chip holds num_experts / expert_parallel experts
// of every expert tensor. Adafactor state per matrix (each expert's matrix on its own) is
// rows + cols when factored (config.factored and both dims >= min_dim_size_to_factor), else
// rows * cols; vectors keep one value per element. This is the rule model/adafactor.cc applies.
struct ChipMemory {
  int64_t params = 0;           // parameters held (elements)
  int64_t optimizer_state = 0;  // Adafactor statistics held (elements)
  int64_t params_bytes = 0;     // fp32
  int64_t grads_bytes = 0;      // fp32, same layout as the parameters
  int64_t optimizer_bytes = 0;  // fp32
  int64_t total_bytes = 0;      // params + grads + optimizer
};

ChipMemory MemoryPerChip(const ParamLayout& layout, const AdafactorConfig& optimizer,
                         int64_t expert_parallel);
// The job's optimizer: Adafactor as above, or AdamW's m and v (2 x the parameters held).
ChipMemory MemoryPerChip(const ParamLayout& layout, const JobSpec& spec, int64_t expert_parallel);

}  // namespace openmoe
