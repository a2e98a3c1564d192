// What an encoder-decoder (T5, Switch Transformer) does that the decoder-only stack standing in
// for it does not, per token of the stand-in. The stand-in (launch/configs/anchors/t5_base.pbtxt)
// runs all L = L_e + L_d layers on rows of S tokens (S = the encoder's input length) with as
// many token-layers per step as the real run: an example is L_e S + L_d t token-layers (t the
// decoder's target length), so the stand-in holds n = (L_e S + L_d t) / L tokens per example
// (313 for T5-Base's 12 + 12 layers, 512 inputs, 114 targets). Per example, the real model
// minus the stand-in, from the papers' dims (Raffel et al. 2020, section 3.1; Fedus et al. 2021,
// Table 9), with d = d_model, A = H hd the attention width, V the vocabulary (the chip's share of
// heads and vocabulary under a model axis):
//   cross-attention projections (each decoder layer; Q and O on the t targets, K and V on the S
//     encoder outputs), training FLOPs           L_d x 6 x 2 d A x (t + S)
//   cross-attention score and context matmuls   L_d x t x 12 H hd S
//   decoder self-attention over t, not S        L_d x t x 12 H hd (t - S)
//   logits and loss on the t targets, not on every token: FLOPs 6 d V (t - n), elementwise
//     3 V (t - n) (hbm_traffic.h's loss row)
//   cross-attention sub-block's norm and residual (hbm_traffic.h's rows): 11 d per target per
//     decoder layer, elementwise
//   S x S passes (attention_scores.h's bytes per element): cross-attention L_d t H S elements,
//     without the position bias (T5 adds it to self-attention only); the decoder's self-attention
//     L_d t H (t - S), negative
// Divided by n: per stand-in token. Not counted: the cross-attention's parameters (4 d A per
// decoder layer: +13% of T5-Base's, in the gradient all-reduce and the optimizer's passes, a few
// ms a step) and saved activations, and the stand-in's rotary embedding (T5 has none).
#pragma once

#include <cstdint>

#include "model/config.h"
#include "parallel/cost/attention_scores.h"

namespace openmoe {

struct EncoderDecoderShape {
  int64_t encoder_layers = 0;  // the first L_e of dims.num_layers
  int64_t target_length = 0;   // t; the inputs are the stand-in's rows (S = seq_len)
};

struct EncoderDecoderDelta {
  double matmul_flops = 0;          // projections and logits, training (forward + backward)
  double projection_flops = 0;      // of it, the cross-attention's projections
  double attention_flops = 0;       // score and context matmuls, training
  double self_score_elements = 0;   // H x keys, self-attention (biased), negative
  double cross_score_elements = 0;  // H x keys, cross-attention (no bias)
  double elementwise_elements = 0;  // norm, residual, loss
};

// Per stand-in token of a row of `seq_len`; `dims` the chip's (local) dims. shape.encoder_layers
// in (0, num_layers), target_length in (0, seq_len].
EncoderDecoderDelta EncoderDecoderPerToken(const ModelDims& dims, int64_t seq_len,
                                           const EncoderDecoderShape& shape);

// Bytes per stand-in token of the delta's S x S passes (operands apart), with `self` and `cross`
// the attention_scores.h bytes of the self- and cross-attention; recomputed: 1 when remat runs
// the attention's forward again, else 0.
double EncoderDecoderScoreBytes(const EncoderDecoderDelta& delta, const ScoreBytes& self,
                                const ScoreBytes& cross, double recomputed);
double EncoderDecoderOperandBytes(const EncoderDecoderDelta& delta, const ScoreBytes& self,
                                  const ScoreBytes& cross, double recomputed);

}  // namespace openmoe
