// A generated, learnable token stream: a sparse random Markov chain over the vocabulary.
//
// Each token has `branching` possible successors with fixed, skewed probabilities, so the
// chain's entropy rate (ConditionalEntropy()) is far below its unigram entropy (about log V):
// a model that learns the transitions drives the loss well below what a unigram model can reach.
// Every row of every batch is a pure function of (seed, global row index): the iterator's whole
// state is the number of rows consumed, and any rank can generate any shard of a batch.
#pragma once

#include <cstdint>
#include <vector>

#include "core/batch.h"

namespace openmoe {

class SyntheticMarkovSource {
 public:
  SyntheticMarkovSource(int64_t vocab_size, int64_t branching, uint64_t seed);

  // Fills `batch` (rows x seq_len) with rows first_row .. first_row + rows - 1 of the stream.
  // Each row is one document: segment id 1, every position has a target (weight 1).
  void FillRows(int64_t first_row, int64_t rows, int64_t seq_len, Batch* batch) const;

  // Entropy rate of the chain in nats per token (the best achievable mean loss).
  double ConditionalEntropy() const;
  // Entropy of the stationary unigram distribution in nats (estimated from a long sample).
  double UnigramEntropy() const;

 private:
  int32_t Next(int32_t token, uint64_t row, int64_t position) const;
  int64_t vocab_size_;
  int64_t branching_;
  uint64_t seed_;
  std::vector<int32_t> successors_;     // (V, branching)
  std::vector<double> cumulative_;      // (branching) cumulative transition probabilities
};

}  // namespace openmoe
