#include "model/activation_memory.h"

#include <algorithm>

#include "model/attention.h"

namespace openmoe {

int64_t DefaultLogitsChunkTokens(int64_t tokens, int64_t vocab) {
  // About 16 MiB of logits at a time, and at least 64 tokens so the GEMMs stay efficient.
  constexpr int64_t kLogitsChunkFloats = int64_t{1} << 22;
  return std::clamp<int64_t>(kLogitsChunkFloats / std::max<int64_t>(vocab, 1), 64,
                             std::max<int64_t>(tokens, 1));
}

ActivationEstimate EstimateActivations(const ModelDims& dims, const ActivationShape& s) {
  const double t = static_cast<double>(s.rows * s.seq_len), d = dims.d_model;
  const double a_width = dims.AttentionWidth(), h = dims.num_heads;
  const double f = dims.d_ff, fe = dims.expert_d_ff, e = dims.num_experts, k = dims.top_k;
  const bool openmoe = dims.ffn_form == FFN_OPENMOE;
  const double w0 = openmoe ? 2 * f : f, w0e = openmoe ? 2 * fe : fe;
  const double fs = dims.SharedDff(), w0s = openmoe ? 2 * fs : fs;  // the shared experts' FFN
  const double kept = s.kept_rows, recv = s.received_rows, block = s.max_block_rows;
  const bool full = dims.remat == REMAT_FULL;
  const bool shared_attention = full || dims.remat == REMAT_ATTENTION;

  double sub_blocks = 0, dense_ffns = 0, moes = 0, max_per_layer = 0;
  for (int64_t l = 0; l < dims.num_layers; ++l) {
    const bool moe = dims.IsMoeLayer(l);
    const double ffn = !moe || dims.extra_dense_ffn ? 1 : 0;
    sub_blocks += 1 + (moe ? 1 : 0) + ffn;
    dense_ffns += ffn;
    moes += moe ? 1 : 0;
    max_per_layer = std::max(max_per_layer, 1 + (moe ? 1.0 : 0.0) + ffn);
  }
  const double layers = static_cast<double>(dims.num_layers);
  const double kept_inputs = full ? layers + (max_per_layer - 1) : sub_blocks;
  const double attention_caches = layers > 0 ? (shared_attention ? 1 : layers) : 0;
  const double ffn_caches = dense_ffns > 0 ? (full ? 1 : dense_ffns) : 0;
  const double moe_caches = moes > 0 ? (full ? 1 : moes) : 0;
  const double routing = t * (2 * e + 1 + 2 * k) + 4 * kept;

  ActivationEstimate out;
  constexpr double kF = 4;  // bytes per float
  out.residual = kF * (kept_inputs * t * d + sub_blocks * t + 3 * t * d + t);
  // q, k, v and the context: bf16 in BF16 (they only feed GEMMs), fp32 otherwise.
  const double qkvc_bytes = dims.precision == GemmPrecision::kBf16 ? 2 : kF;
  out.attention =
      attention_caches * (qkvc_bytes * 4 * t * a_width + kF * (t * h + 2 * t));
  out.ffn = kF * ffn_caches * t * (w0 + f);
  // The expert rows in (bf16 in BF16: they only feed the experts' GEMMs) and out.
  const double rows_in_bytes = dims.precision == GemmPrecision::kBf16 ? 2 : kF;
  out.moe = kF * (moe_caches * (routing + kept * d + recv * (w0e + fe) + t * (w0s + fs) +
                                (s.jitter ? t * d : 0)) +
                  (full ? moes * routing : 0)) +
            moe_caches * rows_in_bytes * kept * d;
  out.exchange = s.experts_remote ? kF * moes * recv * d : 0;

  // Scratch: the most any one sub-block (or the logits) holds at once.
  const AttentionDims attention{.batch = s.rows, .seq_len = s.seq_len, .d_model = dims.d_model,
                                .num_heads = dims.num_heads, .head_dim = dims.head_dim,
                                .precision = dims.precision};
  const int64_t workers = std::max<int64_t>(s.attention_workers, 1);
  const double attention_forward =
      static_cast<double>(AttentionScratchFloats(attention, /*backward=*/false, workers));
  const double attention_backward =
      static_cast<double>(AttentionScratchFloats(attention, /*backward=*/true, workers));
  const double io = 2 * t * d;  // normed input and output, or normed input and its gradient
  // An FFN's temporaries per row (FfnScratchFloats, model/ffn.h): h forward; h, d h and d g0
  // backward. BF16 holds h and the gate gradients, which only feed GEMMs, as bf16.
  const bool bf16 = dims.precision == GemmPrecision::kBf16;
  const double half = bf16 ? 0.5 : 1.0;
  auto ffn_forward = [&](double ff) { return half * ff; };
  auto ffn_backward = [&](double ff, double wi0) { return half * ff + ff + half * wi0; };
  double forward = 0, backward = 0;
  if (layers > 0) {
    forward = std::max(forward, io + attention_forward);
    const double recompute = dims.remat == REMAT_ATTENTION ? t * d + attention_forward : 0.0;
    backward = std::max(backward, io + std::max(recompute, attention_backward));
  }
  if (dense_ffns > 0) {
    forward = std::max(forward, io + t * ffn_forward(f));
    backward = std::max(backward, io + t * ffn_backward(f, w0));
  }
  if (moes > 0) {
    const double jitter = s.jitter ? t * d : 0;
    // The expert-parallel runner's temporaries: forward the experts' outputs and the token rows
    // sent and received (at most a and r: each token once per rank), backward d outputs and d
    // inputs (r each), the d inputs summed per token row and those returned (at most r and a).
    const double remote_forward = s.experts_remote ? 2 * recv * d + kept * d : 0;
    const double remote_backward = s.experts_remote ? 3 * recv * d + kept * d : 0;
    forward = std::max(forward, io + jitter + remote_forward + block * ffn_forward(fe));
    backward = std::max(backward, io + 2 * kept * d + 2 * t * e + remote_backward +
                                      block * ffn_backward(fe, w0e) + jitter);
    if (fs > 0) {
      // Shared experts: their forward runs once the routed experts have returned, holding its
      // output (T d) and hidden (T Fs); their backward runs before the routed experts', with a
      // dense FFN's temporaries.
      forward = std::max(forward, io + t * d + t * ffn_forward(fs));
      backward = std::max(backward, io + t * ffn_backward(fs, w0s));
    }
  }
  // REMAT_FULL re-runs a layer's forward inside the backward, its last output in scratch.
  double peak = std::max(full ? forward + t * d : forward, backward);
  const double v = dims.padded_vocab_size;
  const double chunk = s.logits_chunk_tokens > 0
                           ? std::min<double>(static_cast<double>(s.logits_chunk_tokens), t)
                           : static_cast<double>(DefaultLogitsChunkTokens(
                                 static_cast<int64_t>(t), dims.padded_vocab_size));
  // The final norm's output and a logits chunk; BF16 also the logits' weight as bf16.
  peak = std::max(peak, t * d + chunk * v + (bf16 ? d * v / 2 : 0));
  out.scratch = kF * peak;
  return out;
}

}  // namespace openmoe
