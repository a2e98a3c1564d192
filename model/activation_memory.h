// What Decoder (model/decoder.h) holds for one microbatch, from the dims alone: the one model
// of saved activations and scratch that `openmoe plan`, the trainer's memory check and the
// memory account share, so estimate and measurement agree (tests/model/activation_memory_test.cc
// compares it with Decoder::memory()).
//
// In floats, with T tokens, d = d_model, A = heads x head_dim, F / Fe = dense / expert d_ff,
// W0 / W0e = wi_0's width (2F for FFN_OPENMOE), E experts, k = top_k, a = kept expert rows,
// r = rows the rank's experts run, V = the piece's vocabulary:
//   kept per sub-block   input T d (REMAT_FULL: one per layer, plus the layer's other inputs
//                        once), RMSNorm statistics T
//   attention            q, k, v, context 4 T A, log-sum-exp T H (one cache under remat)
//   dense FFN            up-projections T (W0 + F) (one cache under REMAT_FULL)
//   MoE                  routing ~ T (2E + 1 + 2k) + 4a, expert rows in and out 2 a d (rows
//                        in bf16 in BF16: 2 bytes each, as attention's q, k, v, context), expert
//                        up-projections r (W0e + Fe), the shared experts' up-projections
//                        T (W0s + Fs) (Fs = S Fe, W0s its wi_0 width), jitter T d when on (one
//                        under REMAT_FULL, plus every layer's routing)
//   once                 final input, d final norm, residual gradient 3 T d
//   scratch              the largest sub-block's temporaries (normed input and output 2 T d,
//                        then attention 4 T A, the FFN's 2F + W0 per row, the MoE's gradients
//                        2 a d + 2 T E and one expert block's rows, the shared experts' output
//                        and hidden T (d + Fs) forward, 2Fs + W0s per row backward; a logits
//                        chunk). BF16: the FFNs' h and gate gradients (they only feed GEMMs) are
//                        bf16, so an FFN takes F / 2 per row forward and 1.5F + W0 / 2 backward
//                        (model/ffn.h FfnScratchFloats), and the logits take the logits'
//                        weight as bf16 (d V / 2) beside their chunk
//   expert exchange      (held by parallel/expert_parallel.h) r d per MoE layer when experts
//                        are remote
// Nothing here is collective.
#pragma once

#include <cstdint>

#include "model/config.h"

namespace openmoe {

struct ActivationShape {
  int64_t rows = 0;     // of the decoder's microbatch
  int64_t seq_len = 0;
  double kept_rows = 0;       // a: kept expert assignments of the microbatch, per MoE layer
  double received_rows = 0;   // r: rows the rank's experts run per MoE layer
  double max_block_rows = 0;  // rows of the largest block one expert runs at once
  bool experts_remote = false;  // an expert-parallel exchange (rows cross ranks)
  bool jitter = false;          // router jitter on
  int64_t logits_chunk_tokens = 0;  // 0: the decoder's default
  int64_t attention_workers = 1;    // threads of the blocked attention (tiles per thread)
};

struct ActivationEstimate {
  double residual = 0, attention = 0, ffn = 0, moe = 0;  // as Decoder::Memory, bytes
  double scratch = 0;
  double exchange = 0;  // the expert-parallel runner's kept rows
  double total() const { return residual + attention + ffn + moe + scratch + exchange; }
};

// dims: the decoder's (ParamLayout::local_dims()), remat included.
ActivationEstimate EstimateActivations(const ModelDims& dims, const ActivationShape& shape);

// The decoder's default logits chunk for `tokens` tokens and a piece of `vocab` columns.
int64_t DefaultLogitsChunkTokens(int64_t tokens, int64_t vocab);

}  // namespace openmoe
