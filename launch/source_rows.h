// Held-out rows of a named data source, for `openmoe analyze` and eval during training.
//
// The first `rows` rows of `seq_len` tokens of the causal LM stream EOS d1 EOS d2 EOS ... that the
// source's documents make in record order (CausalLmObjective), exactly what `openmoe prep --npy`
// writes for the same text source and tokenizer, so `openmoe score` of that .npy sees the same
// tokens. Token-shard sources (made by `openmoe prep` with the job's tokenizer) work too: their
// documents are the stored token ids. One pass only: a source too short for `rows` rows is an
// error naming the source, the rows it makes and the field that asked for more.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/batch.h"
#include "launch/score.h"
#include "proto/job.pb.h"

namespace openmoe {

// `source` is tokenized with data.tokenizer; `index` names an unnamed source ("source<i>");
// `field` (e.g. "eval.rows") is what an error blames for asking too many rows.
absl::StatusOr<TokenArray> SourceRows(const SourceConfig& source, int64_t index,
                                      const DataConfig& data, int64_t rows, int64_t seq_len,
                                      const std::string& field);

// Rows [first, first + count) of `t` as a Batch of causal LM rows, as `openmoe score` makes them:
// position s predicts s + 1 of the same row (the last has no target), segment ids 1; rows at or
// past t.rows are padding (token 0, no target, segment 0).
Batch CausalBatch(const TokenArray& t, int64_t first, int64_t count);

// The name a source goes by: its name, else "source<index>".
std::string SourceName(const SourceConfig& source, int64_t index);

}  // namespace openmoe
