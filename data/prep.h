// Prep: corpora to token shards (and optionally a trained tokenizer first). The library side of
// `openmoe prep` (launch/prep.cc parses the flags).
//
// Documents are read from the inputs in order (each input is one SourceConfig: its own format
// and text field), tokenized in parallel in blocks, and written in input order, so the shards are
// a pure function of the inputs, the tokenizer and shard_tokens, whatever the thread count.
//
// CausalLmRows is the other product (`openmoe prep --npy`): held-out rows for `openmoe score`.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/token_shards.h"
#include "data/tokenizer.h"
#include "proto/job.pb.h"

namespace openmoe {

struct PrepOptions {
  std::vector<SourceConfig> inputs;
  // An existing sentencepiece model, or (train_tokenizer) where to write one trained on inputs.
  std::string tokenizer_model;
  std::string train_tokenizer;
  TokenizerTrainingOptions training;
  int64_t extra_ids = 100;
  // Token-shard directory; empty: only train the tokenizer.
  std::string out_dir;
  int64_t shard_tokens = int64_t{1} << 22;
  int64_t threads = 2;
  bool skip_bad_records = false;
  int64_t max_record_bytes = DataConfig::default_instance().max_record_bytes();
};

struct PrepResult {
  int64_t documents = 0;
  int64_t text_bytes = 0;
  int64_t tokens = 0;
  int64_t bad_records = 0;
  int64_t shards = 0;
  double seconds = 0;
};

// Progress and a summary go to *log (may be null).
absl::StatusOr<PrepResult> RunPrep(const PrepOptions& options, std::ostream* log);

// The first `rows` rows of `seq_len` tokens (row-major, rows * seq_len ids) of the inputs made
// into the causal LM stream EOS d1 EOS d2 EOS ... by the training objective (CausalLmObjective),
// documents in input order, tokenized with options.tokenizer_model. The rows are consecutive
// slices of that stream, not Packer rows: `openmoe score` reads each row as one causal sequence
// (every position predicts the next), so a row must not end in padding. FailedPrecondition naming
// the inputs and the number of full rows they make when that is fewer than `rows`.
absl::StatusOr<std::vector<int32_t>> CausalLmRows(const PrepOptions& options, int64_t rows,
                                                  int64_t seq_len);

}  // namespace openmoe
