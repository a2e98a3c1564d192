// `openmoe prep`: corpora to token shards, and/or training a sentencepiece tokenizer.
//
//   openmoe prep --input FILE|DIR ... [--text_field F ...] [--format
//   auto|jsonl|jsonl_zst|text_tree]
//                (--tokenizer MODEL | --train_tokenizer MODEL [--vocab_size N] [--max_sentences N])
//                [--extra_ids N] [--out DIR] [--shard_tokens N] [--threads N] [--skip_bad_records]
//   openmoe prep --input FILE|DIR ... [--text_field F ...] [--format ...] --tokenizer MODEL
//                --npy OUT.npy --rows R --seq_len S [--form causal_lm|prefix_lm] [--mode TEXT]
//                [--force] [--extra_ids N] [--skip_bad_records]
//
// --npy writes held-out rows for `openmoe score --tokens`: the inputs tokenized as causal LM
// (documents in order, separated by EOS, packed end to end) or, with --form prefix_lm, one
// prefix-LM row per chunk with the mode token --mode (default [S2S]) (data/heldout_rows.h); the
// first R rows of S tokens as a C-order int32 .npy [R, S] (see HeldOutRows in data/prep.h). Written
// to a temporary name and renamed; an existing OUT is refused unless --force; fewer than R rows is
// an error saying how many the inputs make.
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
