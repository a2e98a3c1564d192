// The HBM traffic of the attention's S x S passes (the scores, their softmax and its gradient)
// by the element sizes the modelled run keeps them in. Per query token per layer, in bytes per
// (head x key) element: multiply by H S (heads x keys) for one token of one layer.
//
// With l the logits' bytes (cost_model.attention_logits_bytes: 4 models Mesh TensorFlow's
// attention, whose default float32_logits casts q and k to fp32 and runs the scores, the bias add
// and the softmax in fp32, then casts the weights to v's dtype; 2 when they stay bf16) and p the
// probabilities' bytes (activation_bytes), every op reading and writing HBM (no fusion, as
// hbm_traffic.h):
//   operands (the attention's matmuls; the cost model sets them against the MXU time):
//     forward   QK^T writes s (l), PV reads p (p)                              l + p
//     backward  dO V^T writes dp (p), P^T dO reads p (p), dS K and dS^T Q read ds (2 l)
//                                                                              2 p + 2 l
//   elementwise (memory-bound):
//     softmax          forward reads s, writes the weights (2 l); backward reads the weights
//                      and dp, writes ds (3 l)                                 2 l | 3 l
//     cast (l != p)    forward reads the fp32 weights, writes p (l + p); backward reads dp,
//                      writes it in fp32 (p + l)                               l + p | p + l
//     position bias    forward reads s and the bias, writes s (3 l); backward the bias's
//                      gradient sums ds over the batch (reads ds, l)           3 l | l
// With l = p and no bias this is what the model counted before: operands 6 p, softmax 5 p.
// The position bias is a (heads, S, S) tensor added to every layer's logits and shared by the
// batch (T5's relative-position bias, Raffel et al. 2020, section 2.1); each example's add reads
// it (H S S x l bytes do not stay in a core's 16 MiB of vector memory), and computing it, once
// per step, is not counted.
// Apart, per token per layer and per element of the attention width A = H hd, the fp32 logits'
// casts of q and k (forward reads 2 A p, writes 2 A l; backward the same for dq and dk):
// 4 A (l + p) when l != p.
#pragma once

#include <cstdint>

namespace openmoe {

struct ScoreBytes {
  double operand_forward = 0;  // per H S element
  double operand_backward = 0;
  double elementwise_forward = 0;
  double elementwise_backward = 0;
  double qk_cast = 0;  // per element of the attention width, forward + backward
};

// logits_bytes, probability_bytes >= 1.
ScoreBytes AttentionScoreBytes(int64_t logits_bytes, int64_t probability_bytes, bool position_bias);

}  // namespace openmoe
