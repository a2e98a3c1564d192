#include "model/decoder.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "core/bf16.h"
#include "core/check.h"
#include "core/gemm.h"
#include "core/gemm_rows.h"
#include "core/kernels.h"
#include "core/phase_timer.h"
#include "model/activation_memory.h"
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
  // Which sub-blocks share a cache (and, under REMAT_FULL, an input): a shared slot holds the
  // last forward's, and the backward re-runs the forward into it first. Inputs: one per
  // sub-block, or under REMAT_FULL one per layer (slot = layer) plus one per position after a
  // layer's first, shared by every layer (slot = num_layers + position - 1).
  const bool full = dims_.remat == REMAT_FULL;
  const bool shared_attention = full || dims_.remat == REMAT_ATTENTION;
  int slots[3] = {0, 0, 0};  // caches per kind
  int64_t inputs = 0;
  for (int64_t i = 0; i < dims_.num_layers; ++i) {
    const std::string l = absl::StrCat("layers.", i, ".");
    int position = 0;
    auto add = [&](Kind kind, const std::string& norm, std::vector<std::string> names) {
      SubBlock& b = blocks_.emplace_back();
      b.kind = kind;
      b.layer = i;
      b.first_of_layer = position == 0;
      b.norm = &layout.Get(l + norm);
      for (const std::string& n : names) b.weights.push_back(&layout.Get(l + n));
      const bool shared = full || (kind == Kind::kAttention && shared_attention);
      b.cache_slot = shared ? 0 : slots[static_cast<int>(kind)]++;
      b.input_slot = static_cast<int>(!full ? blocks_.size() - 1
                                      : position == 0 ? i
                                                      : dims_.num_layers + position - 1);
      inputs = std::max<int64_t>(inputs, b.input_slot + 1);
      ++position;
    };
    add(Kind::kAttention, "attn_norm.scale", {"attn.wq", "attn.wk", "attn.wv", "attn.wo"});
    const bool moe = dims_.IsMoeLayer(i);
    if (moe) {
      std::vector<std::string> names = {"moe.router", "moe.experts.wi_0", "moe.experts.wi_1",
                                        "moe.experts.wo"};
      if (dims_.num_shared_experts > 0) {
        for (const char* n : {"moe.shared.wi_0", "moe.shared.wi_1", "moe.shared.wo"})
          names.push_back(n);
      }
      add(Kind::kMoe, "moe_norm.scale", names);
    }
    if (!moe || dims_.extra_dense_ffn) {
      add(Kind::kFfn, "mlp_norm.scale", {"mlp.wi_0", "mlp.wi_1", "mlp.wo"});
    }
  }
  inputs_.resize(inputs);
  attention_caches_.resize(std::max(slots[static_cast<int>(Kind::kAttention)], 1));
  moe_caches_.resize(std::max(slots[static_cast<int>(Kind::kMoe)], 1));
  if (dims_.num_shared_experts > 0) shared_caches_.resize(moe_caches_.size());
  ffn_caches_.resize(std::max(slots[static_cast<int>(Kind::kFfn)], 1));
  for (MoeCache& c : moe_caches_) c.scratch = &scratch_;
  if (full) kept_routing_.resize(dims_.num_layers);
}

namespace {

AttentionDims MakeAttentionDims(const ModelDims& d, const Batch& batch) {
  return {.batch = batch.rows, .seq_len = batch.seq_len, .d_model = d.d_model,
          .num_heads = d.num_heads, .head_dim = d.head_dim, .precision = d.precision};
}

// The MoE layer's shared experts as one gated FFN (model/params.h), on this piece's columns.
FfnDims SharedFfnDims(const ModelDims& d, int64_t tokens) {
  return {tokens, d.d_model, d.SharedDff(), d.ffn_form, d.precision};
}

}  // namespace

void Decoder::ForwardSubBlock(const float* params, const Batch& batch, SubBlock& b, float* next,
                              DecoderSums* sums) {
  // The MoE sub-block's own time (norm, routing) is the router's; MoeForward times its parts.
  ScopedPhase phase(b.kind == Kind::kAttention ? Phase::kAttentionForward
                    : b.kind == Kind::kFfn     ? Phase::kDenseFfnForward
                                               : Phase::kRouterForward);
  ScratchScope scope(&scratch_);
  const int64_t t = batch.num_tokens(), d = dims_.d_model;
  const Tensor& input = inputs_[b.input_slot];
  float* normed = scratch_.Take(t * d);
  float* out = scratch_.Take(t * d);
  b.rstd.ResizeUninitialized({t});
  RmsNormForward(input.data(), params + b.norm->offset, t, d, dims_.norm_eps, normed,
                 b.rstd.data());
  auto w = [&](int i) { return params + b.weights[i]->offset; };
  switch (b.kind) {
    case Kind::kAttention:
      AttentionForward(MakeAttentionDims(dims_, batch), rope_, {w(0), w(1), w(2), w(3)}, normed,
                       batch.segment_ids.data(), &attention_caches_[b.cache_slot], out,
                       &scratch_);
      break;
    case Kind::kFfn:
      FfnForward({t, d, dims_.d_ff, dims_.ffn_form, dims_.precision}, {w(0), w(1), w(2)}, normed,
                 &ffn_caches_[b.cache_slot], out, /*accumulate=*/false, &scratch_);
      break;
    case Kind::kMoe: {
      const MoeDims md{t, d, dims_.expert_d_ff, dims_.ffn_form, dims_.num_experts,
                       dims_.precision};
      MoeCache& cache = moe_caches_[b.cache_slot];
      if (routing_.jitter_noise > 0) {
        FillRouterJitter(routing_.jitter_noise, routing_.jitter_seed, b.layer, batch, d,
                         &cache.jitter);
      } else {
        cache.jitter.Resize({0});
      }
      cache.token_ids = batch.tokens.data();
      cache.segment_ids = batch.segment_ids.data();
      cache.seq_len = batch.seq_len;
      sums->router[b.layer] = MoeForward(md, routing_, {w(0), w(1), w(2), w(3)}, normed, &cache,
                                         out, runner_, b.layer, model_comm_);
      if (dims_.num_shared_experts > 0) {
        // Shared experts: every token, on the same normed input, added to the routed output.
        // Their wo is row-parallel as a dense FFN's: each piece's part is summed over the group
        // (the routed output is whole already).
        ScopedPhase shared_phase(Phase::kExpertsForward);
        float* shared = scratch_.Take(t * d);
        FfnForward(SharedFfnDims(dims_, t), {w(4), w(5), w(6)}, normed,
                   &shared_caches_[b.cache_slot], shared, /*accumulate=*/false, &scratch_);
        if (model_comm_ != nullptr) model_comm_->AllReduceSum(shared, t * d);
        AddInPlace(out, shared, t * d);
      }
      break;
    }
  }
  // Megatron's g: the row-parallel wo left each piece a partial sum (MoE summed its expert rows).
  if (model_comm_ != nullptr && b.kind != Kind::kMoe) model_comm_->AllReduceSum(out, t * d);
  const float* in = input.data();
  for (int64_t j = 0; j < t * d; ++j) next[j] = in[j] + out[j];
}

DecoderSums Decoder::Forward(const float* params, const Batch& batch, const LossScales& scales,
                             int64_t position_buckets, float* grads) {
  const int64_t t = batch.num_tokens(), d = dims_.d_model, v = dims_.padded_vocab_size;
  if (batch.seq_len != seq_len_) rope_ = MakeRopeTable(batch.seq_len, dims_.head_dim, dims_.rope_base);
  rows_ = batch.rows;
  seq_len_ = batch.seq_len;
  forward_grads_ = grads;
  scratch_.Reset();
  DecoderSums sums;
  sums.router.resize(dims_.num_layers);
  sums.routing.resize(dims_.num_layers);

  // Embedding lookup (not scaled) into the first sub-block's input.
  Tensor* x = blocks_.empty() ? &final_input_ : &inputs_[blocks_[0].input_slot];
  x->ResizeUninitialized({t, d});
  const float* emb = params + embedding_->offset;
  // This layout holds the embedding rows [vocab_begin_, + v) (all of them without a model axis):
  // its tokens' rows, zeros for the others, summed over the model group.
  const int64_t whole_vocab = layout_.dims().padded_vocab_size;
  for (int64_t i = 0; i < t; ++i) {
    OPENMOE_CHECK(batch.tokens[i] >= 0 && batch.tokens[i] < whole_vocab);
    const int64_t tok = EmbeddingRow(batch.tokens[i]);
    float* row = x->data() + i * d;
    if (tok >= 0) {
      std::memcpy(row, emb + tok * d, d * sizeof(float));
    } else {
      std::fill_n(row, d, 0.0f);
    }
  }
  if (model_comm_ != nullptr) model_comm_->AllReduceSum(x->data(), t * d);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    SubBlock& b = blocks_[i];
    Tensor& next = NextInput(i);
    next.ResizeUninitialized({t, d});
    ForwardSubBlock(params, batch, b, next.data(), &sums);
    if (b.kind == Kind::kMoe) {
      const Routing& r = moe_caches_[b.cache_slot].routing;
      sums.routing[b.layer] = ComputeRoutingStats(r, batch.seq_len, position_buckets);
      if (!kept_routing_.empty()) kept_routing_[b.layer] = r;
    }
  }

  ScopedPhase logits_phase(Phase::kLogitsLossForward);
  // Final norm, then the logits and the fused loss chunk by chunk. With grads, each chunk's
  // d loss / d logits goes at once into the logits' weight gradient and d normed.
  ScratchScope scope(&scratch_);
  float* normed = scratch_.Take(t * d);
  final_rstd_.ResizeUninitialized({t});
  RmsNormForward(final_input_.data(), params + final_norm_->offset, t, d, dims_.norm_eps, normed,
                 final_rstd_.data());
  if (grads != nullptr) final_normed_grad_.ResizeUninitialized({t, d});
  const int64_t chunk = logits_chunk_tokens_ > 0 ? std::min(logits_chunk_tokens_, std::max<int64_t>(t, 1))
                                                : DefaultLogitsChunkTokens(t, v);
  float* logits = scratch_.Take(chunk * v);
  const float* w_logits = params + logits_->offset;
  // BF16: every chunk's GEMMs read the logits' weight rounded to bf16; rounded once here, in
  // scratch, it spares each GEMM its own rounded copy.
  const GemmInput w = dims_.precision == GemmPrecision::kBf16
                          ? TakeGemmRows(&scratch_, dims_.precision, d, v).FilledFrom(w_logits)
                          : GemmInput(w_logits, v);
  for (int64_t c0 = 0; c0 < t; c0 += chunk) {
    const int64_t c = std::min(chunk, t - c0);
    const float* normed_c = normed + c0 * d;
    Gemm(dims_.precision, {}, c, v, d, {normed_c, d}, w, logits, v);
    const LmLossSums part =
        model_comm_ == nullptr
            ? LmLossForwardBackward(logits, batch.targets.data() + c0,
                                    batch.loss_weights.data() + c0, c, v, scales.output_z_weight,
                                    scales.lm_normalizer, logits)
            : VocabParallelLmLossForwardBackward(
                  logits, batch.targets.data() + c0, batch.loss_weights.data() + c0, c, v,
                  vocab_begin_, layout_.dims().padded_vocab_size, scales.output_z_weight,
                  scales.lm_normalizer, model_comm_, logits);
    sums.lm.cross_entropy += part.cross_entropy;
    sums.lm.z_loss += part.z_loss;
    sums.lm.weight += part.weight;
    sums.lm.correct += part.correct;
    if (grads == nullptr) continue;
    ScopedPhase backward(Phase::kLogitsLossBackward);
    // BF16: d loss / d logits only feeds the two GEMMs below, which round it anyway; rounded once,
    // in place, as bf16, it spares each a rounded copy (core/gemm.h).
    const GemmInput dlogits = dims_.precision == GemmPrecision::kBf16
                                  ? GemmInput(NarrowToBf16InPlace(logits, c * v), v)
                                  : GemmInput(logits, v);
    Gemm(dims_.precision, {.transpose_a = true, .beta = 1.0f}, d, v, c, {normed_c, d}, dlogits,
         grads + logits_->offset, v);
    Gemm(dims_.precision, {.transpose_b = true}, c, d, v, dlogits, w,
         final_normed_grad_.data() + c0 * d, d);
  }
  if (grads != nullptr) MarkFinal(*logits_);
  sums.loss = ObjectiveOf(sums.lm, sums.router, scales);
  return sums;
}

int64_t Decoder::EmbeddingRow(int32_t token) const {
  const int64_t row = token - vocab_begin_;
  return row >= 0 && row < dims_.padded_vocab_size ? row : -1;
}

SparseRows Decoder::EmbeddingGradRows() const {
  return {.begin = embedding_->offset, .rows = dims_.padded_vocab_size, .row_floats = dims_.d_model};
}

std::vector<int64_t> Decoder::EmbeddingRowsWritten(const Batch& batch) const {
  std::vector<int64_t> rows;
  for (int32_t token : batch.tokens)
    if (const int64_t row = EmbeddingRow(token); row >= 0) rows.push_back(row);
  return rows;
}

void Decoder::MarkFinal(const ParamInfo& p) {
  if (listener_ != nullptr) listener_->GradientsFinal(p.offset, p.size);
}

void Decoder::RecomputeLayer(const float* params, const Batch& batch, size_t last) {
  size_t first = last;
  while (!blocks_[first].first_of_layer) --first;
  DecoderSums discarded;  // the forward counted the sums already
  discarded.router.resize(dims_.num_layers);
  for (size_t i = first; i < last; ++i) {
    ForwardSubBlock(params, batch, blocks_[i], inputs_[blocks_[i + 1].input_slot].data(),
                    &discarded);
  }
  // The last sub-block's output is the next layer's kept input: only its caches are needed.
  ScratchScope scope(&scratch_);
  ForwardSubBlock(params, batch, blocks_[last],
                  scratch_.Take(batch.num_tokens() * dims_.d_model), &discarded);
}

void Decoder::BackwardSubBlock(const float* params, const Batch& batch, const LossScales& scales,
                               SubBlock& b, float* grads) {
  ScopedPhase phase(b.kind == Kind::kAttention ? Phase::kAttentionBackward
                    : b.kind == Kind::kFfn     ? Phase::kDenseFfnBackward
                                               : Phase::kRouterBackward);
  ScratchScope scope(&scratch_);
  const int64_t t = batch.num_tokens(), d = dims_.d_model;
  const Tensor& input = inputs_[b.input_slot];
  // The normed input, remade exactly as the forward made it.
  float* normed = scratch_.Take(t * d);
  RmsNormForward(input.data(), params + b.norm->offset, t, d, dims_.norm_eps, normed,
                 b.rstd.data());
  float* dn = scratch_.Take(t * d);
  std::fill_n(dn, t * d, 0.0f);
  const float* dy = residual_grad_.data();
  auto w = [&](int i) { return params + b.weights[i]->offset; };
  auto g = [&](int i) { return grads + b.weights[i]->offset; };
  switch (b.kind) {
    case Kind::kAttention: {
      const AttentionDims ad = MakeAttentionDims(dims_, batch);
      AttentionCache& cache = attention_caches_[b.cache_slot];
      if (dims_.remat == REMAT_ATTENTION) {  // (REMAT_FULL re-ran the whole layer already)
        ScopedPhase recompute(Phase::kAttentionForward);
        ScratchScope out_scope(&scratch_);
        AttentionForward(ad, rope_, {w(0), w(1), w(2), w(3)}, normed, batch.segment_ids.data(),
                         &cache, scratch_.Take(t * d), &scratch_);
      }
      AttentionBackward(ad, rope_, {w(0), w(1), w(2), w(3)}, normed, batch.segment_ids.data(),
                        &cache, dy, {g(0), g(1), g(2), g(3)}, dn, &scratch_);
      break;
    }
    case Kind::kFfn:
      FfnBackward({t, d, dims_.d_ff, dims_.ffn_form, dims_.precision}, {w(0), w(1), w(2)}, normed,
                  &ffn_caches_[b.cache_slot], dy, {g(0), g(1), g(2)}, dn, &scratch_);
      break;
    case Kind::kMoe: {
      if (dims_.num_shared_experts > 0) {
        // Shared experts first, into the zeroed d normed; their pieces' parts summed over the
        // group before the routed experts add their (already whole) share.
        ScopedPhase shared_phase(Phase::kExpertsBackward);
        FfnBackward(SharedFfnDims(dims_, t), {w(4), w(5), w(6)}, normed,
                    &shared_caches_[b.cache_slot], dy, {g(4), g(5), g(6)}, dn, &scratch_);
        if (model_comm_ != nullptr) model_comm_->AllReduceSum(dn, t * d);
      }
      const MoeDims md{t, d, dims_.expert_d_ff, dims_.ffn_form, dims_.num_experts,
                       dims_.precision};
      MoeBackward(md, {w(0), w(1), w(2), w(3)}, normed, &moe_caches_[b.cache_slot], dy,
                  scales.load_balance_scale, scales.router_z_scale, {g(0), g(1), g(2), g(3)}, dn,
                  runner_, b.layer, model_comm_);
      break;
    }
  }
  // Megatron's f backward: each piece's column-parallel inputs gave a partial d normed (MoE
  // summed its dispatched rows' gradient already).
  if (model_comm_ != nullptr && b.kind != Kind::kMoe) model_comm_->AllReduceSum(dn, t * d);
  // The residual passes dy through unchanged; the norm adds its share.
  RmsNormBackward(dn, input.data(), params + b.norm->offset, b.rstd.data(), t, d,
                  residual_grad_.data(), grads + b.norm->offset);
}

void Decoder::Backward(const float* params, const Batch& batch, const LossScales& scales,
                       float* grads) {
  const int64_t t = batch.num_tokens(), d = dims_.d_model;
  OPENMOE_CHECK_MSG(batch.rows == rows_ && batch.seq_len == seq_len_,
                    "Backward must follow Forward on the same batch");
  OPENMOE_CHECK_MSG(grads != nullptr && grads == forward_grads_,
                    "Backward needs a Forward given the same grads (the logits' gradient is "
                    "accumulated there)");
  forward_grads_ = nullptr;
  // No Reset here (the forward's scopes released everything): it would grow the arena to the
  // forward's high-water mark, and in a first step a larger backward would then hold that block
  // beside its own overflow blocks, more than its high-water mark. The Reset at the end grows it.
  ScopedPhase phase(Phase::kLogitsLossBackward);  // the sub-blocks' scopes take theirs out
  // The logits' part ran in the forward; d normed of the final norm is left.
  float* dnormed = final_normed_grad_.data();
  if (model_comm_ != nullptr) model_comm_->AllReduceSum(dnormed, t * d);
  residual_grad_.Resize({t, d});
  RmsNormBackward(dnormed, final_input_.data(), params + final_norm_->offset, final_rstd_.data(),
                  t, d, residual_grad_.data(), grads + final_norm_->offset);
  MarkFinal(*final_norm_);
  for (size_t i = blocks_.size(); i-- > 0;) {
    const bool last_of_layer = i + 1 == blocks_.size() || blocks_[i + 1].first_of_layer;
    if (dims_.remat == REMAT_FULL && last_of_layer) RecomputeLayer(params, batch, i);
    BackwardSubBlock(params, batch, scales, blocks_[i], grads);
    for (const ParamInfo* w : blocks_[i].weights) MarkFinal(*w);
    MarkFinal(*blocks_[i].norm);
  }
  phase.Switch(Phase::kOther);
  // Embedding: scatter-add the residual gradient into the looked-up rows.
  float* demb = grads + embedding_->offset;
  const float* dx = residual_grad_.data();
  for (int64_t i = 0; i < t; ++i) {
    const int64_t tok = EmbeddingRow(batch.tokens[i]);
    if (tok >= 0) AddInPlace(demb + tok * d, dx + i * d, d);
  }
  MarkFinal(*embedding_);
  // Grows the arena to this step's high-water mark now, so that memory() after a step is the
  // steady state.
  scratch_.Reset();
}

const Routing* Decoder::routing(int64_t layer) const {
  if (!kept_routing_.empty()) {
    return layer >= 0 && layer < dims_.num_layers && dims_.IsMoeLayer(layer) ? &kept_routing_[layer]
                                                                             : nullptr;
  }
  for (const SubBlock& b : blocks_)
    if (b.kind == Kind::kMoe && b.layer == layer) return &moe_caches_[b.cache_slot].routing;
  return nullptr;
}

namespace {
int64_t RoutingBytes(const Routing& r) {
  auto vec = [](const auto& v) {
    return static_cast<int64_t>(v.capacity() * sizeof(typename std::decay_t<decltype(v)>::value_type));
  };
  return r.logits.capacity_bytes() + r.probs.capacity_bytes() + r.lse.capacity_bytes() +
         vec(r.choice_expert) + vec(r.choice_slot) + vec(r.expert_offsets) + vec(r.kept_token) +
         vec(r.kept_choice) + vec(r.kept_gate);
}
}  // namespace

Decoder::Memory Decoder::memory() const {
  Memory m;
  for (const Tensor& x : inputs_) m.residual += x.capacity_bytes();
  for (const SubBlock& b : blocks_) m.residual += b.rstd.capacity_bytes();
  m.residual += final_input_.capacity_bytes() + final_rstd_.capacity_bytes() +
                final_normed_grad_.capacity_bytes() + residual_grad_.capacity_bytes();
  for (const AttentionCache& c : attention_caches_) m.attention += c.CapacityBytes();
  for (const FfnCache& c : ffn_caches_) m.ffn += c.g0.capacity_bytes() + c.g1.capacity_bytes();
  for (const FfnCache& c : shared_caches_) m.moe += c.g0.capacity_bytes() + c.g1.capacity_bytes();
  for (const MoeCache& c : moe_caches_) {
    m.moe += RoutingBytes(c.routing) + c.jitter.capacity_bytes() + c.dispatched.capacity_bytes() +
             static_cast<int64_t>(c.dispatched16.capacity() * sizeof(uint16_t)) +
             c.expert_out.capacity_bytes() + c.own_scratch.capacity_bytes();
    for (const FfnCache& e : c.expert_ffn) m.moe += e.g0.capacity_bytes() + e.g1.capacity_bytes();
  }
  for (const Routing& r : kept_routing_) m.moe += RoutingBytes(r);
  m.scratch = scratch_.capacity_bytes();
  return m;
}

}  // namespace openmoe
