// Prep: corpora to token shards (and optionally a trained tokenizer first). The library side of
// `openmoe prep` (launch/prep.cc parses the flags).
//
// Documents are read from the inputs in order (each input is one SourceConfig: its own format
// and text field), tokenized in parallel in blocks, and written in input order, so the shards are
// a pure function of the inputs, the tokenizer and shard_tokens, whatever the thread count.
//
// HeldOutRows is the other product (`openmoe prep --npy`): held-out rows for `openmoe score`.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/heldout_rows.h"
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

// The first `rows` rows of `seq_len` tokens (row-major, rows * seq_len ids) that the inputs'
// documents make in input order in `form` (data/heldout_rows.h), tokenized with
// options.tokenizer_model: kCausalLm, consecutive slices of the stream EOS d1 EOS d2 EOS ... (not
// Packer rows: `openmoe score` reads each row as one causal sequence, so a row must not end in
// padding); kPrefixLm, one row per chunk with `mode` (tokenized as the UL2 objective does)
// after the first EOS. FailedPrecondition naming the inputs and the number of full rows they
// make when that is fewer than `rows`.
absl::StatusOr<std::vector<int32_t>> HeldOutRows(const PrepOptions& options, int64_t rows,
                                                 int64_t seq_len, RowForm form = RowForm::kCausalLm,
                                                 const std::string& mode = "");

}  // namespace openmoe
