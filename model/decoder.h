// The OpenMoE decoder on one process: embedding, pre-norm blocks, final norm, untied logits,
// and the fused LM loss; the backward walks the same sub-blocks in reverse.
//
// Each layer is a list of residual sub-blocks x <- x + F(RMSNorm(x)):
//   dense layer: F = attention, then F = FFN
//   MoE layer:   F = attention, then F = MoE, then F = FFN (the extra dense FFN, switchable off)
// Parameters and gradients are flat buffers in a ParamLayout. A Decoder owns the activations of
// one microbatch shape and reuses them across calls.
//
// Tensor parallelism (Megatron-style, on the mesh's `model` axis): a layout holding model piece i
// of p computes on layout.local_dims(): its heads (wq/wk/wv by heads, wo by rows), its mlp
// columns of the dense FFNs and of every expert, its rows of the embedding and columns of the
// logits. The residual stream, the norms and the router are replicated over the group; each
// attention / FFN sub-block all-reduces its (T, d) output in the forward and its input gradient
// in the backward (before the norm's backward); the MoE sub-block all-reduces the experts' rows
// instead (model/moe.h); the embedding all-reduces its lookup and the logits run the
// vocabulary-parallel loss (model/losses.h), so no rank holds (T, V) logits. Every rank of the
// group then returns the same sums and the same whole gradient of every replicated parameter.
#pragma once

#include <cstdint>
#include <vector>

#include "core/batch.h"
#include "core/communicator.h"
#include "core/tensor.h"
#include "model/attention.h"
#include "model/config.h"
#include "model/ffn.h"
#include "model/loss_summary.h"
#include "model/losses.h"
#include "model/moe.h"
#include "model/params.h"
#include "model/router.h"

namespace openmoe {

// LossScales (how this call's sums become its share of the global objective) and DecoderSums:
// model/loss_summary.h.
class Decoder {
 public:
  // runner: where MoE experts run (null: all in this process; see model/moe.h). Each MoE layer
  // passes its layer index as its key to the runner (which gets the piece's expert mlp size).
  // model_comm: the ranks of this rank's model group, in model-piece order (size
  // layout.model_parts(); may be null when that is 1, and is not used then). Forward and
  // Backward are collective over it.
  Decoder(const ParamLayout& layout, const RoutingConfig& routing, ExpertRunner* runner = nullptr,
          Communicator* model_comm = nullptr);

  // Routing used by MoE layers from now on (e.g. the eval capacity factor).
  void SetRouting(const RoutingConfig& routing) { routing_ = routing; }

  // Runs the forward and the loss, keeping what the backward needs. position_buckets: routing
  // drop statistics per bucket of sequence position.
  DecoderSums Forward(const float* params, const Batch& batch, const LossScales& scales,
                      int64_t position_buckets = 4);

  // Backward of the last Forward: grads (layout.total_size()) += d loss / d params.
  void Backward(const float* params, const Batch& batch, const LossScales& scales, float* grads);

  // The routing of `layer` in the last Forward; null for dense layers.
  const Routing* routing(int64_t layer) const;

 private:
  enum class Kind { kAttention, kMoe, kFfn };
  struct SubBlock {
    Kind kind;
    int64_t layer;
    const ParamInfo* norm;
    std::vector<const ParamInfo*> weights;  // attention: wq wk wv wo; ffn: wi_0 wi_1 wo;
                                            // moe: router wi_0 wi_1 wo
    Tensor input;   // (T, d) residual stream entering the sub-block
    Tensor normed;  // (T, d)
    Tensor rstd;    // (T)
    AttentionCache attention;
    FfnCache ffn;
    MoeCache moe;
  };

  void ForwardSubBlock(const float* params, const Batch& batch, SubBlock& block, float* out,
                       DecoderSums* sums);
  void BackwardSubBlock(const float* params, const Batch& batch, const LossScales& scales,
                        SubBlock& block, float* grads);

  const ParamLayout& layout_;
  ModelDims dims_;
  RoutingConfig routing_;
  ExpertRunner* runner_;
  Communicator* model_comm_;  // null unless the layout holds one of several model pieces
  int64_t vocab_begin_;       // first global id of this piece's embedding rows / logit columns
  std::vector<SubBlock> blocks_;
  const ParamInfo* embedding_;
  const ParamInfo* final_norm_;
  const ParamInfo* logits_;
  RopeTable rope_;
  int64_t rows_ = 0, seq_len_ = 0;
  Tensor final_input_;   // (T, d)
  Tensor final_normed_;  // (T, d)
  Tensor final_rstd_;    // (T)
  Tensor logits_buffer_; // (T, V local): logits, then (after the fused loss) d loss / d logits
  Tensor residual_grad_; // (T, d)
  Tensor normed_grad_;   // (T, d)
  Tensor block_out_;     // (T, d)
};

}  // namespace openmoe
