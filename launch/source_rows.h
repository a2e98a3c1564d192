// Held-out rows of a named data source, for `openmoe analyze` and eval during training, and how
// `openmoe score` and eval turn rows into batches.
//
// The first `rows` rows of `seq_len` tokens that the source's documents make in record order in
// a RowForm (data/heldout_rows.h): the causal LM stream EOS d1 EOS d2 EOS ..., or one prefix-LM
// row per chunk with the job's prefix-LM mode token; exactly what `openmoe prep --npy [--form
// prefix_lm]` writes for the same text source and tokenizer, so `openmoe score` of that .npy sees
// the same tokens. Token-shard sources (made by `openmoe prep` with the job's tokenizer) work too:
// their documents are the stored token ids. One pass only: a source too short for `rows` rows is an
// error naming the source, the rows it makes and the field that asked for more.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/batch.h"
#include "data/heldout_rows.h"
#include "launch/score.h"
#include "proto/job.pb.h"

namespace openmoe {

// `source` is tokenized with data.tokenizer; `index` names an unnamed source ("source<i>");
// `field` (e.g. "eval.rows") is what an error blames for asking too many rows.
// kPrefixLm takes the mode of the first prefix-LM denoiser of data's UL2 mixture (none when
// there is none).
absl::StatusOr<TokenArray> SourceRows(const SourceConfig& source, int64_t index,
                                      const DataConfig& data, int64_t rows, int64_t seq_len,
                                      const std::string& field, RowForm form = RowForm::kCausalLm);

// Rows [first, first + count) of `t` as a Batch, as `openmoe score` and eval make them: position
// s predicts s + 1 of the same row (the last has no target). kCausalLm: every position but the
// last counts, segment ids 1. kPrefixLm: only the continuation counts (PrefixLmLossSpan), the EOS
// padding after it is segment 0. Rows at or past t.rows are padding (token 0, no target, segment
// 0). kPrefixLm rows must pass CheckRows.
Batch RowsBatch(const TokenArray& t, int64_t first, int64_t count, RowForm form);

// InvalidArgument naming the first row that is not of `form` (kPrefixLm: every row begins with
// the same token, the EOS, which recurs to end the prefix).
absl::Status CheckRows(const TokenArray& t, RowForm form);

// "causal_lm" / "prefix_lm" (the --form flags).
absl::StatusOr<RowForm> ParseRowForm(const std::string& name);
const char* RowFormName(RowForm form);

// The UL2 mixture a job trains on: data.ul2.denoisers, else OpenMoE's (DefaultUl2Denoisers).
std::vector<Ul2Denoiser> Ul2Mixture(const DataConfig& data);

// The form eval during training uses: kPrefixLm for a UL2 corpus job whose mixture has a
// prefix-LM denoiser (its held-out loss in the form it trains on), else kCausalLm.
RowForm EvalRowForm(const DataConfig& data);

// The name a source goes by: its name, else "source<index>".
std::string SourceName(const SourceConfig& source, int64_t index);

}  // namespace openmoe
