// `openmoe prep`: corpora to token shards, and/or training a sentencepiece tokenizer.
//
//   openmoe prep --input FILE|DIR ... [--text_field F ...] [--format
//   auto|jsonl|jsonl_zst|text_tree]
//                (--tokenizer MODEL | --train_tokenizer MODEL [--vocab_size N] [--max_sentences N])
//                [--extra_ids N] [--out DIR] [--shard_tokens N] [--threads N] [--skip_bad_records]
//
// Each --input is one source; --text_field is given once (for all inputs) or once per input, in
// order. With --train_tokenizer a unigram model is trained on the inputs first (and then used for
// --out, if given). Runs on one process (no MPI). See data/prep.h and data/token_shards.h.
#pragma once

#include <ostream>

#include "absl/status/status.h"
#include "launch/args.h"

namespace openmoe {

absl::Status RunPrepCommand(const CommandLine& cl, std::ostream& out);

}  // namespace openmoe
