#include "model/decoder.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/bf16.h"
#include "core/check.h"
#include "core/gemm.h"
#include "core/kernels.h"
#include "core/phase_timer.h"
#include "model/rmsnorm.h"
#include "model/router_jitter.h"

namespace openmoe {

Decoder::Decoder(const ParamLayout& layout, const RoutingConfig& routing, ExpertRunner* runner,
                 Communicator* model_comm)
    : layout_(layout),
      dims_(layout.local_dims()),
      routing_(routing),
      runner_(runner),
      model_comm_(layout.model_parts() > 1 ? model_comm : nullptr),
      vocab_begin_(layout.vocab_begin()) {
  if (layout.model_parts() > 1) {
    OPENMOE_CHECK_MSG(model_comm != nullptr && model_comm->size() == layout.model_parts() &&
                          model_comm->rank() == layout.model_index(),
                      "a model piece %lld of %lld needs its model group's communicator",
                      static_cast<long long>(layout.model_index()),
                      static_cast<long long>(layout.model_parts()));
  }
  embedding_ = &layout.Get("embedding");
  final_norm_ = &layout.Get("final_norm.scale");
  logits_ = &layout.Get("logits");
  for (int64_t i = 0; i < dims_.num_layers; ++i) {
    const std::string l = absl::StrCat("layers.", i, ".");
    auto add = [&](Kind kind, const std::string& norm, std::vector<std::string> names) {
      SubBlock& b = blocks_.emplace_back();
      b.kind = kind;
      b.layer = i;
      b.norm = &layout.Get(l + norm);
      for (const std::string& n : names) b.weights.push_back(&layout.Get(l + n));
    };
    add(Kind::kAttention, "attn_norm.scale", {"attn.wq", "attn.wk", "attn.wv", "attn.wo"});
    const bool moe = dims_.IsMoeLayer(i);
    if (moe) {
      add(Kind::kMoe, "moe_norm.scale",
          {"moe.router", "moe.experts.wi_0", "moe.experts.wi_1", "moe.experts.wo"});
    }
    if (!moe || dims_.extra_dense_ffn) add(Kind::kFfn, "mlp_norm.scale", {"mlp.wi_0", "mlp.wi_1", "mlp.wo"});
  }
}

namespace {

AttentionDims MakeAttentionDims(const ModelDims& d, const Batch& batch) {
  return {.batch = batch.rows, .seq_len = batch.seq_len, .d_model = d.d_model,
          .num_heads = d.num_heads, .head_dim = d.head_dim, .precision = d.precision};
}

}  // namespace

void Decoder::ForwardSubBlock(const float* params, const Batch& batch, SubBlock& b, float* out,
                              DecoderSums* sums) {
  // The MoE sub-block's own time (norm, routing) is the router's; MoeForward times its parts.
  ScopedPhase phase(b.kind == Kind::kAttention ? Phase::kAttentionForward
                    : b.kind == Kind::kFfn     ? Phase::kDenseFfnForward
                                               : Phase::kRouterForward);
  const int64_t t = batch.num_tokens(), d = dims_.d_model;
  b.normed.ResizeUninitialized({t, d});
  b.rstd.ResizeUninitialized({t});
  RmsNormForward(b.input.data(), params + b.norm->offset, t, d, dims_.norm_eps, b.normed.data(),
                 b.rstd.data());
  auto w = [&](int i) { return params + b.weights[i]->offset; };
  switch (b.kind) {
    case Kind::kAttention:
      AttentionForward(MakeAttentionDims(dims_, batch), rope_, {w(0), w(1), w(2), w(3)},
                       b.normed.data(), batch.segment_ids.data(), &b.attention, out);
      break;
    case Kind::kFfn:
      FfnForward({t, d, dims_.d_ff, dims_.ffn_form, dims_.precision}, {w(0), w(1), w(2)},
                 b.normed.data(), &b.ffn, out);
      break;
    case Kind::kMoe: {
      const MoeDims md{t, d, dims_.expert_d_ff, dims_.ffn_form, dims_.num_experts,
                       dims_.precision};
      if (routing_.jitter_noise > 0) {
        FillRouterJitter(routing_.jitter_noise, routing_.jitter_seed, b.layer, batch, d,
                         &b.moe.jitter);
      } else {
        b.moe.jitter.Resize({0});
      }
      b.moe.token_ids = batch.tokens.data();
      b.moe.segment_ids = batch.segment_ids.data();
      sums->router[b.layer] = MoeForward(md, routing_, {w(0), w(1), w(2), w(3)}, b.normed.data(),
                                         &b.moe, out, runner_, b.layer, model_comm_);
      break;
    }
  }
  // Megatron's g: the row-parallel wo left each piece a partial sum (MoE summed its expert rows).
  if (model_comm_ != nullptr && b.kind != Kind::kMoe) model_comm_->AllReduceSum(out, t * d);
}

DecoderSums Decoder::Forward(const float* params, const Batch& batch, const LossScales& scales,
                             int64_t position_buckets) {
  const int64_t t = batch.num_tokens(), d = dims_.d_model, v = dims_.padded_vocab_size;
  if (batch.seq_len != seq_len_) rope_ = MakeRopeTable(batch.seq_len, dims_.head_dim, dims_.rope_base);
  rows_ = batch.rows;
  seq_len_ = batch.seq_len;
  DecoderSums sums;
  sums.router.resize(dims_.num_layers);
  sums.routing.resize(dims_.num_layers);

  // Embedding lookup (not scaled) into the first sub-block's input.
  Tensor* x = blocks_.empty() ? &final_input_ : &blocks_[0].input;
  x->ResizeUninitialized({t, d});
  const float* emb = params + embedding_->offset;
  // This layout holds the embedding rows [vocab_begin_, + v) (all of them without a model axis):
  // its tokens' rows, zeros for the others, summed over the model group.
  const int64_t whole_vocab = layout_.dims().padded_vocab_size;
  for (int64_t i = 0; i < t; ++i) {
    OPENMOE_CHECK(batch.tokens[i] >= 0 && batch.tokens[i] < whole_vocab);
    const int64_t tok = batch.tokens[i] - vocab_begin_;
    float* row = x->data() + i * d;
    if (tok >= 0 && tok < v) {
      std::memcpy(row, emb + tok * d, d * sizeof(float));
    } else {
      std::fill_n(row, d, 0.0f);
    }
  }
  if (model_comm_ != nullptr) model_comm_->AllReduceSum(x->data(), t * d);
  block_out_.ResizeUninitialized({t, d});
  for (size_t i = 0; i < blocks_.size(); ++i) {
    SubBlock& b = blocks_[i];
    ForwardSubBlock(params, batch, b, block_out_.data(), &sums);
    if (b.kind == Kind::kMoe) {
      sums.routing[b.layer] = ComputeRoutingStats(b.moe.routing, batch.seq_len, position_buckets);
    }
    Tensor& next = i + 1 < blocks_.size() ? blocks_[i + 1].input : final_input_;
    next.ResizeUninitialized({t, d});
    const float* in = b.input.data();
    const float* o = block_out_.data();
    float* nx = next.data();
    for (int64_t j = 0; j < t * d; ++j) nx[j] = in[j] + o[j];
  }

  ScopedPhase logits_phase(Phase::kLogitsLossForward);
  // Final norm, logits, fused loss: logits_buffer_ ends up holding d loss / d logits.
  final_normed_.ResizeUninitialized({t, d});
  final_rstd_.ResizeUninitialized({t});
  RmsNormForward(final_input_.data(), params + final_norm_->offset, t, d, dims_.norm_eps,
                 final_normed_.data(), final_rstd_.data());
  logits_buffer_.ResizeUninitialized({t, v});
  Gemm(dims_.precision, {}, t, v, d, final_normed_.data(), params + logits_->offset,
       logits_buffer_.data());
  if (model_comm_ == nullptr) {
    sums.lm = LmLossForwardBackward(logits_buffer_.data(), batch.targets.data(),
                                    batch.loss_weights.data(), t, v, scales.output_z_weight,
                                    scales.lm_normalizer, logits_buffer_.data());
  } else {
    sums.lm = VocabParallelLmLossForwardBackward(
        logits_buffer_.data(), batch.targets.data(), batch.loss_weights.data(), t, v, vocab_begin_,
        layout_.dims().padded_vocab_size, scales.output_z_weight, scales.lm_normalizer,
        model_comm_, logits_buffer_.data());
  }
  // BF16: d loss / d logits only feeds the two logits GEMMs of the backward, which round it
  // anyway; rounding it once spares each a rounded copy (core/gemm.h).
  if (dims_.precision == GemmPrecision::kBf16) {
    RoundToBf16(logits_buffer_.data(), logits_buffer_.data(), t * v);
  }
  sums.loss = ObjectiveOf(sums.lm, sums.router, scales);
  return sums;
}

void Decoder::BackwardSubBlock(const float* params, const Batch& batch, const LossScales& scales,
                               SubBlock& b, float* grads) {
  ScopedPhase phase(b.kind == Kind::kAttention ? Phase::kAttentionBackward
                    : b.kind == Kind::kFfn     ? Phase::kDenseFfnBackward
                                               : Phase::kRouterBackward);
  const int64_t t = batch.num_tokens(), d = dims_.d_model;
  normed_grad_.Resize({t, d});
  const float* dy = residual_grad_.data();
  float* dn = normed_grad_.data();
  auto w = [&](int i) { return params + b.weights[i]->offset; };
  auto g = [&](int i) { return grads + b.weights[i]->offset; };
  switch (b.kind) {
    case Kind::kAttention:
      AttentionBackward(MakeAttentionDims(dims_, batch), rope_, {w(0), w(1), w(2), w(3)},
                        b.normed.data(), batch.segment_ids.data(), &b.attention, dy,
                        {g(0), g(1), g(2), g(3)}, dn);
      break;
    case Kind::kFfn:
      FfnBackward({t, d, dims_.d_ff, dims_.ffn_form, dims_.precision}, {w(0), w(1), w(2)},
                  b.normed.data(), &b.ffn, dy, {g(0), g(1), g(2)}, dn);
      break;
    case Kind::kMoe: {
      const MoeDims md{t, d, dims_.expert_d_ff, dims_.ffn_form, dims_.num_experts,
                       dims_.precision};
      MoeBackward(md, {w(0), w(1), w(2), w(3)}, b.normed.data(), &b.moe, dy,
                  scales.load_balance_scale, scales.router_z_scale, {g(0), g(1), g(2), g(3)}, dn, runner_,
                  b.layer, model_comm_);
      break;
    }
  }
  // Megatron's f backward: each piece's column-parallel inputs gave a partial d normed (MoE
  // summed its dispatched rows' gradient already).
  if (model_comm_ != nullptr && b.kind != Kind::kMoe) model_comm_->AllReduceSum(dn, t * d);
  // The residual passes dy through unchanged; the norm adds its share.
  RmsNormBackward(dn, b.input.data(), params + b.norm->offset, b.rstd.data(), t, d,
                  residual_grad_.data(), grads + b.norm->offset);
}

void Decoder::Backward(const float* params, const Batch& batch, const LossScales& scales,
                       float* grads) {
  const int64_t t = batch.num_tokens(), d = dims_.d_model, v = dims_.padded_vocab_size;
  OPENMOE_CHECK_MSG(batch.rows == rows_ && batch.seq_len == seq_len_,
                    "Backward must follow Forward on the same batch");
  ScopedPhase phase(Phase::kLogitsLossBackward);  // the sub-blocks' scopes take theirs out
  // Logits: logits = final_normed @ W.
  const float* dlogits = logits_buffer_.data();
  Gemm(dims_.precision, {.transpose_a = true, .beta = 1.0f}, d, v, t, final_normed_.data(),
       dlogits, grads + logits_->offset);
  normed_grad_.ResizeUninitialized({t, d});
  Gemm(dims_.precision, {.transpose_b = true}, t, d, v, dlogits, params + logits_->offset,
       normed_grad_.data());
  if (model_comm_ != nullptr) model_comm_->AllReduceSum(normed_grad_.data(), t * d);
  residual_grad_.Resize({t, d});
  RmsNormBackward(normed_grad_.data(), final_input_.data(), params + final_norm_->offset,
                  final_rstd_.data(), t, d, residual_grad_.data(), grads + final_norm_->offset);
  for (size_t i = blocks_.size(); i-- > 0;) BackwardSubBlock(params, batch, scales, blocks_[i], grads);
  phase.Switch(Phase::kOther);
  // Embedding: scatter-add the residual gradient into the looked-up rows.
  float* demb = grads + embedding_->offset;
  const float* dx = residual_grad_.data();
  for (int64_t i = 0; i < t; ++i) {
    const int64_t tok = batch.tokens[i] - vocab_begin_;
    if (tok >= 0 && tok < v) AddInPlace(demb + tok * d, dx + i * d, d);  // v: this piece's rows
  }
}

const Routing* Decoder::routing(int64_t layer) const {
  for (const SubBlock& b : blocks_)
    if (b.kind == Kind::kMoe && b.layer == layer) return &b.moe.routing;
  return nullptr;
}

}  // namespace openmoe
