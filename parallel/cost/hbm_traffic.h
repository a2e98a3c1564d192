// Per-token estimates, from the model's dims, of (1) the HBM traffic of the memory-bound
// (elementwise) work of a training step and (2) the activations a step keeps for the backward
// pass. Both count elements; the cost model multiplies by CostModelConfig.activation_bytes.
//
// Matmul operands are not counted in (1): their HBM reads overlap the MXU on a TPU. Every
// elementwise op counts the elements it reads and writes through HBM (no fusion across ops):
// forward plus backward (a backward op reads its saved inputs and the incoming gradient and
// writes the outgoing one). With d = d_model, A = heads * head_dim, S = seq_len, H = heads,
// f = d_ff, f_e = expert d_ff, E = experts, V = padded vocab, r = expert-buffer rows per token
// (the capacity buffer E*C/G when dispatch is padded, else the rows that can be kept):
//   op                    forward                        backward                  total
//   RMSNorm               2d (read x, write y)           3d (x, dy -> dx)          5d
//   residual add          3d                             3d                        6d
//   RoPE on q and k       4A                             4A                        8A
//   gated act. OpenMoE    4f (a, b, c -> h)              7f (a, b, c, dh -> 3)     11f
//   gated act. SwiGLU     3f                             5f                        8f
//   dispatch + combine    3rd + d                        2rd + 2d                  5rd + 3d
//   shared experts' add   3d (routed + shared)           3d (into d normed)        6d
//   router softmax        2E                             3E                        5E
//   embedding lookup      2d                             2d                        4d
//   loss on the logits    V (logsumexp)                  2V (read, write dlogits)  3V
// Per layer: attention block 11d + 8A; a dense FFN block (and the extra dense FFN of an MoE
// layer) 11d + gate(f); an MoE block 14d + 5E + 5rd + r gate(f_e), plus 6d + gate(f_s) with
// shared experts (f_s = S f_e: every token runs them). Per token once: final norm, embedding and
// loss 9d + 3V.
//
//
// The attention's S x S passes (the scores' softmax and the attention matmuls' S x S operands) are
// apart, in bytes by the element sizes the modelled run keeps them in:
// parallel/cost/attention_scores.h.
//
// What a recomputation runs again (the forward column, S x S passes apart): the attention
// sub-block's RoPE, 4A per layer (REMAT_ATTENTION: the norm output is kept); a whole layer's
// forward (REMAT_FULL): attention block 5d + 4A, dense FFN block 5d + gate_fwd(f), MoE block
// 6d + 2E + 3rd + r gate_fwd(f_e) (+ 3d + gate_fwd(f_s) with shared experts), gate_fwd OpenMoE
// 4f, SwiGLU 3f.
//
// Saved activations per token (no rematerialisation): attention block 2d + 4A + HS (x, norm
// out, q, k, v, probs, attention out; the probabilities are kept, as the modelled T5X / GShard
// runs on v3 do: XLA's attention there is not blocked, unlike this trainer's); FFN block 2d +
// saved_gate(f) with saved_gate OpenMoE 4f (a, b, c, h), SwiGLU 3f; MoE block 2d + E + 2rd + r
// saved_gate(f_e) (+ saved_gate(f_s) with shared experts: they read the block's norm output); once:
// 2d + V (logits).
#pragma once

#include "model/config.h"

namespace openmoe {

struct TokenTraffic {
  double elementwise_elements = 0;  // HBM reads + writes of elementwise ops, fwd + bwd
  double saved_elements = 0;        // activations kept for the backward pass
  // Of saved_elements, what REMAT_ATTENTION recomputes instead (q, k, v, probs, attention out:
  // 3A + HS + A per layer) and what REMAT_FULL keeps (each layer's input x: d per layer).
  double attention_internal_elements = 0;
  double layer_input_elements = 0;
  // Of saved_elements, the attention probabilities (H S per layer): the TPU prediction keeps
  // them (the modelled runs did); this trainer's blocked attention keeps a log-sum-exp (H per
  // layer) instead (launch/memory_check.h).
  double attention_probability_elements = 0;
  // The forward elementwise work a recomputation runs again (above), all layers.
  double attention_forward_elements = 0;  // REMAT_ATTENTION
  double layer_forward_elements = 0;      // REMAT_FULL
};

// For one token of a row of `seq_len`, `expert_rows_per_token` as r above (0 for a dense model).
TokenTraffic TrafficPerToken(const ModelDims& dims, int64_t seq_len, double expert_rows_per_token);

}  // namespace openmoe
