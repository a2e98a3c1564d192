// ModelDims: the model's sizes resolved from the job spec (vocab padding, expert d_ff default,
// which layers are MoE). Everything in model/ takes these, never the proto directly.
#pragma once

#include <cstdint>

#include "core/gemm.h"
#include "model/router.h"
#include "proto/job.pb.h"

namespace openmoe {

struct ModelDims {
  int64_t vocab_size = 0;         // real vocabulary
  int64_t padded_vocab_size = 0;  // rows of the embedding, columns of the logits
  int64_t num_layers = 0;
  int64_t d_model = 0;
  int64_t num_heads = 0;
  int64_t head_dim = 0;
  int64_t d_ff = 0;         // dense FFN hidden size
  int64_t expert_d_ff = 0;  // expert FFN hidden size
  int64_t num_experts = 0;  // 0: dense model
  // Shared experts per MoE layer (model.num_shared_experts): every token passes through them.
  int64_t num_shared_experts = 0;
  int64_t moe_interval = 0;
  int64_t top_k = 2;
  bool extra_dense_ffn = true;
  FfnForm ffn_form = FFN_OPENMOE;
  float norm_eps = 1e-6f;
  float rope_base = 10000.0f;
  // train.compute_dtype: the precision of every matmul but the router's (attention projections
  // and QK^T / AV, dense and extra FFNs, experts, logits; forward and backward). The router,
  // softmaxes, norms, losses, parameters and gradients stay fp32 whatever it says.
  GemmPrecision precision = GemmPrecision::kFp32;
  // train.remat: what the decoder's backward recomputes instead of keeping (model/decoder.h).
  Remat remat = REMAT_NONE;

  bool IsMoeLayer(int64_t layer) const {
    return num_experts > 0 && moe_interval > 0 && (layer + 1) % moe_interval == 0;
  }
  int64_t NumMoeLayers() const;
  // The shared experts of an MoE layer as one gated FFN: S experts of hidden expert_d_ff are
  // one FFN of hidden S * expert_d_ff (their columns side by side), 0 without shared experts.
  int64_t SharedDff() const { return num_shared_experts * expert_d_ff; }
  int64_t AttentionWidth() const { return num_heads * head_dim; }
};

ModelDims DimsFromSpec(const JobSpec& spec);

// The router settings of the spec; eval selects router.eval_capacity_factor.
RoutingConfig RoutingFromSpec(const JobSpec& spec, bool eval);

}  // namespace openmoe
