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
//   attention softmax     2HS (scores in, probs out)     3HS (p, dp -> ds)         5HS
//   gated act. OpenMoE    4f (a, b, c -> h)              7f (a, b, c, dh -> 3)     11f
//   gated act. SwiGLU     3f                             5f                        8f
//   dispatch + combine    3rd + d                        2rd + 2d                  5rd + 3d
//   router softmax        2E                             3E                        5E
//   embedding lookup      2d                             2d                        4d
//   loss on the logits    V (logsumexp)                  2V (read, write dlogits)  3V
// Per layer: attention block 11d + 8A + 5HS; a dense FFN block (and the extra dense FFN of an MoE
// layer) 11d + gate(f); an MoE block 14d + 5E + 5rd + r gate(f_e). Per token once: final norm,
// embedding and loss 9d + 3V.
//
//
// Apart (attention_operand_elements): the S x S operands of the attention's own matmuls, 6HS per
// layer: forward QK^T writes the scores and PV reads the probabilities; backward dO V^T writes dp,
// P^T dO reads p, dS K and dS^T Q read ds. Those matmuls do 2 hd FLOPs per S x S element moved
// (bf16: hd FLOP/byte, 64 at head_dim 64), under a v3 core's 137 FLOP/byte (61.5 TFLOP/s over
// 450 GB/s), so their operands need not hide behind the MXU: the cost model takes the longer of
// their FLOP time and this traffic (cost_model.h). The other matmuls (d_model, d_ff or vocab
// deep) are far above the ridge: their operands overlap the MXU and are not counted.
//
// Saved activations per token (no rematerialisation): attention block 2d + 4A + HS (x, norm
// out, q, k, v, probs, attention out; the probabilities are kept, as the modelled T5X / GShard
// runs on v3 do: XLA's attention there is not blocked, unlike this trainer's); FFN block 2d + saved_gate(f) with saved_gate OpenMoE 4f
// (a, b, c, h), SwiGLU 3f; MoE block 2d + E + 2rd + r saved_gate(f_e); once: 2d + V (logits).
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
  // The attention matmuls' S x S operands (6 H S per layer), not in elementwise_elements.
  double attention_operand_elements = 0;
};

// For one token of a row of `seq_len`, `expert_rows_per_token` as r above (0 for a dense model).
TokenTraffic TrafficPerToken(const ModelDims& dims, int64_t seq_len, double expert_rows_per_token);

}  // namespace openmoe
