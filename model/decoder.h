// The OpenMoE decoder on one process: embedding, pre-norm blocks, final norm, untied logits,
// and the fused LM loss; the backward walks the same sub-blocks in reverse.
//
// Each layer is a list of residual sub-blocks x <- x + F(RMSNorm(x)):
//   dense layer: F = attention, then F = FFN
//   MoE layer:   F = attention, then F = MoE, then F = FFN (the extra dense FFN, switchable off)
// With shared experts (dims.num_shared_experts), the MoE sub-block's F is the routed experts'
// output plus the shared experts' (one gated FFN, model/params.h) on the same normed input.
// Parameters and gradients are flat buffers in a ParamLayout. A Decoder owns the activations of
// one microbatch shape and reuses them across calls.
//
// Memory. What the backward needs is kept per sub-block: its input (the residual stream) and
// RMSNorm statistics, attention's q, k, v, context and log-sum-exp, the FFNs' up-projections, the
// MoE's routing, expert rows and up-projections (the shared experts' too). Everything else (the
// normed input, recomputed bit for bit from the input; the FFNs' gated hidden; every backward
// temporary; a chunk of logits) comes from one ScratchArena shared by all sub-blocks, so it costs
// one sub-block's worth. The logits run in chunks of tokens: the forward computes each chunk's loss
// and, when given the gradients, its logits-weight gradient and d normed at once, so no (T, V)
// matrix lives past its chunk. dims.remat (train.remat) trades compute for memory further:
//   REMAT_ATTENTION  attention keeps nothing but its input; its backward re-runs its forward
//   REMAT_FULL       a layer keeps only its input; its backward re-runs the layer's forward
//                    (MoE layers' dispatch and combine included: collective, as the forward)
// Losses and gradients are the same bits under every policy. memory() reports what is held.
//
// Tensor parallelism (Megatron-style, on the mesh's `model` axis): a layout holding model piece i
// of p computes on layout.local_dims(): its heads (wq/wk/wv by heads, wo by rows), its mlp
// columns of the dense FFNs and of every expert, its rows of the embedding and columns of the
// logits. The residual stream, the norms and the router are replicated over the group; each
// attention / FFN sub-block all-reduces its (T, d) output in the forward and its input gradient
// in the backward (before the norm's backward); the MoE sub-block all-reduces the experts' rows
// instead (model/moe.h), and its shared experts' output and input gradient as an FFN does; the
// embedding all-reduces its lookup and the logits run the vocabulary-parallel loss
// (model/losses.h), so no rank holds (T, V) logits. Every rank of the
// group then returns the same sums and the same whole gradient of every replicated parameter.
#pragma once

#include <cstdint>
#include <vector>

#include "core/batch.h"
#include "core/communicator.h"
#include "core/gradient_listener.h"
#include "core/scratch_arena.h"
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

  // Tokens per chunk of the logits (0: about 16 MiB of logits per chunk, at least 64 tokens).
  // The sums and gradients do not depend on it beyond fp32 summation order.
  void SetLogitsChunkTokens(int64_t tokens) { logits_chunk_tokens_ = tokens; }

  // Told, as Forward and Backward finish them, which ranges of grads hold their final gradient
  // (the logits' at the end of Forward, each sub-block's weights and norm after its backward, the
  // final norm's and the embedding's): for the gradient reduction to start early. Null: nobody.
  // The caller sets it for the last microbatch of a step only (earlier ones are not final).
  void SetGradientListener(GradientListener* listener) { listener_ = listener; }

  // The embedding gradient's rows (this piece's vocabulary rows, d_model floats each, at the
  // embedding's offset in grads) and which of them Backward of `batch` writes: the rows its
  // tokens looked up. The others it leaves as they were (zero in a step's gradient).
  SparseRows EmbeddingGradRows() const;
  std::vector<int64_t> EmbeddingRowsWritten(const Batch& batch) const;

  // Routing used by MoE layers from now on (e.g. the eval capacity factor).
  void SetRouting(const RoutingConfig& routing) { routing_ = routing; }

  // Runs the forward and the loss, keeping what the backward needs. position_buckets: routing
  // drop statistics per bucket of sequence position. grads: null for a forward alone (eval);
  // for training, the buffer Backward will get: the logits' weight gradient is accumulated into
  // it here, chunk by chunk.
  DecoderSums Forward(const float* params, const Batch& batch, const LossScales& scales,
                      int64_t position_buckets = 4, float* grads = nullptr);

  // Backward of the last Forward, which must have been given the same grads: grads
  // (layout.total_size()) += d loss / d params.
  void Backward(const float* params, const Batch& batch, const LossScales& scales, float* grads);

  // Bytes held between calls, by owner (all allocations, whatever the last call used).
  struct Memory {
    int64_t residual = 0;   // sub-block inputs, norm statistics, the final norm's input and d
    int64_t attention = 0;  // attention caches
    int64_t ffn = 0;        // dense FFN caches
    int64_t moe = 0;        // MoE caches: routing, expert rows in and out, experts' caches
                            // (the shared experts' included)
    int64_t scratch = 0;    // the shared arena
    int64_t saved() const { return residual + attention + ffn + moe; }
  };
  Memory memory() const;

  // The routing of `layer` in the last Forward; null for dense layers.
  const Routing* routing(int64_t layer) const;

 private:
  enum class Kind { kAttention, kMoe, kFfn };
  struct SubBlock {
    Kind kind;
    int64_t layer;
    bool first_of_layer;
    const ParamInfo* norm;
    std::vector<const ParamInfo*> weights;  // attention: wq wk wv wo; ffn: wi_0 wi_1 wo;
                                            // moe: router wi_0 wi_1 wo, then the shared
                                            // experts' wi_0 wi_1 wo when it has them
    int input_slot;  // inputs_[input_slot]: (T, d) residual stream entering the sub-block
    int cache_slot;  // into the cache vector of its kind (shared by sub-blocks under remat)
    Tensor rstd;     // (T)
  };

  // Runs block b on inputs_[b.input_slot] and writes next (T, d) = input + F(norm(input)).
  void ForwardSubBlock(const float* params, const Batch& batch, SubBlock& b, float* next,
                       DecoderSums* sums);
  void BackwardSubBlock(const float* params, const Batch& batch, const LossScales& scales,
                        SubBlock& b, float* grads);
  // REMAT_FULL: re-runs the forward of the layer ending at block `last` from its kept input.
  void RecomputeLayer(const float* params, const Batch& batch, size_t last);
  void MarkFinal(const ParamInfo& p);
  // This piece's embedding row of `token` (its vocabulary rows start at vocab_begin_), or -1
  // when another model piece holds it.
  int64_t EmbeddingRow(int32_t token) const;
  // The residual stream leaving block i.
  Tensor& NextInput(size_t i) {
    return i + 1 < blocks_.size() ? inputs_[blocks_[i + 1].input_slot] : final_input_;
  }

  const ParamLayout& layout_;
  ModelDims dims_;
  RoutingConfig routing_;
  ExpertRunner* runner_;
  GradientListener* listener_ = nullptr;
  Communicator* model_comm_;  // null unless the layout holds one of several model pieces
  int64_t vocab_begin_;       // first global id of this piece's embedding rows / logit columns
  std::vector<SubBlock> blocks_;
  std::vector<Tensor> inputs_;
  std::vector<AttentionCache> attention_caches_;
  std::vector<FfnCache> ffn_caches_;
  std::vector<MoeCache> moe_caches_;
  std::vector<FfnCache> shared_caches_;  // the shared experts', by MoE cache slot
  std::vector<Routing> kept_routing_;  // REMAT_FULL: each MoE layer's routing, by layer
  ScratchArena scratch_;
  const ParamInfo* embedding_;
  const ParamInfo* final_norm_;
  const ParamInfo* logits_;
  RopeTable rope_;
  int64_t rows_ = 0, seq_len_ = 0;
  int64_t logits_chunk_tokens_ = 0;
  Tensor final_input_;         // (T, d)
  Tensor final_rstd_;          // (T)
  Tensor final_normed_grad_;   // (T, d) d loss / d final norm output, made by the forward
  const float* forward_grads_ = nullptr;  // the grads the last Forward accumulated into
  Tensor residual_grad_;       // (T, d)
};

}  // namespace openmoe
