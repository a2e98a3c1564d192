// The language-model loss on the logits: cross-entropy plus the output z-loss, fused with its
// backward so the (T, V) probabilities are formed once.
//
// Per target token t with weight w_t (0 for padding / inputs): w_t * (-log p[t, y_t]) and
// w_t * z_weight * log(Z_t)^2. Both sums are multiplied by `normalizer` (1 / the number of real
// target tokens in the global batch), so gradient accumulation and any layout give one loss.
//
// The vocabulary-parallel form (Megatron's) runs on one piece of the vocabulary per rank of a
// model group: no rank ever holds the (T, V) logits, only its (T, V_local) columns.
#pragma once

#include <cstdint>

#include "core/communicator.h"

namespace openmoe {

struct LmLossSums {
  double cross_entropy = 0;  // sum_t w_t * -log p[t, y_t]        (not normalised)
  double z_loss = 0;         // sum_t w_t * log(Z_t)^2            (not normalised, not weighted)
  double weight = 0;         // sum_t w_t
  int64_t correct = 0;       // weighted tokens whose argmax is the target
};

// logits: (T, V) in; dlogits: (T, V) out, overwritten with
// d(normalizer * (CE_sum + z_weight * z_sum)) / d logits. dlogits may alias logits.
// targets: (T) in [0, V); weights: (T).
LmLossSums LmLossForwardBackward(const float* logits, const int32_t* targets, const float* weights,
                                 int64_t tokens, int64_t vocab, double z_weight, double normalizer,
                                 float* dlogits);

// Vocabulary-parallel: logits (T, local_vocab) are columns [vocab_begin, vocab_begin +
// local_vocab) of the whole (T, vocab) logits; comm holds the ranks of the other pieces (collective
// over it: one max and one sum all-reduce of a few numbers per token). Returns the sums of the
// whole (the same on every rank, `correct` with the whole's first-maximum rule); dlogits (T,
// local_vocab) gets this piece's columns of the whole's gradient, and may alias logits.
LmLossSums VocabParallelLmLossForwardBackward(const float* logits, const int32_t* targets,
                                              const float* weights, int64_t tokens,
                                              int64_t local_vocab, int64_t vocab_begin,
                                              int64_t vocab, double z_weight, double normalizer,
                                              Communicator* comm, float* dlogits);

}  // namespace openmoe
