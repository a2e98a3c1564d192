#include "launch/source_rows.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "data/document_reader.h"
#include "data/document_stream.h"
#include "data/heldout_rows.h"
#include "data/tokenizer.h"
#include "data/ul2.h"

namespace openmoe {

Batch RowsBatch(const TokenArray& t, int64_t first, int64_t count, RowForm form) {
  Batch b;
  b.Resize(count, t.seq_len);
  for (int64_t r = 0; r < count; ++r) {
    const int64_t src = first + r;
    if (src >= t.rows) continue;
    const int32_t* row = t.tokens.data() + src * t.seq_len;
    // Loss on [lo, hi); positions from `real` on are padding.
    int64_t lo = 0, hi = t.seq_len - 1, real = t.seq_len;
    if (form == RowForm::kPrefixLm) {
      OPENMOE_CHECK_MSG(PrefixLmLossSpan(row, t.seq_len, &lo, &hi),
                        "row %lld is not a prefix-LM row (CheckRows first)",
                        static_cast<long long>(src));
      real = hi + 1;
    }
    for (int64_t s = 0; s < t.seq_len; ++s) {
      const int64_t i = r * t.seq_len + s;
      b.tokens[i] = row[s];
      b.segment_ids[i] = s < real ? 1 : 0;
      if (s + 1 < t.seq_len) b.targets[i] = row[s + 1];
      if (s >= lo && s < hi) b.loss_weights[i] = 1.0f;
    }
  }
  return b;
}

absl::Status CheckRows(const TokenArray& t, RowForm form) {
  if (form == RowForm::kCausalLm) return absl::OkStatus();
  for (int64_t r = 0; r < t.rows; ++r) {
    const int32_t* row = t.tokens.data() + r * t.seq_len;
    int64_t lo = 0, hi = 0;
    if (row[0] != t.tokens[0] || !PrefixLmLossSpan(row, t.seq_len, &lo, &hi))
      return absl::InvalidArgumentError(
          absl::StrCat("row ", r,
                       " is not a prefix-LM row (EOS mode prefix EOS continuation, the EOS being "
                       "row 0's first token ",
                       t.tokens[0], "; `openmoe prep --npy --form prefix_lm` writes them)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<RowForm> ParseRowForm(const std::string& name) {
  if (name == "causal_lm") return RowForm::kCausalLm;
  if (name == "prefix_lm") return RowForm::kPrefixLm;
  return absl::InvalidArgumentError(
      absl::StrCat("flag --form: '", name, "' is not causal_lm or prefix_lm"));
}

const char* RowFormName(RowForm form) {
  return form == RowForm::kPrefixLm ? "prefix_lm" : "causal_lm";
}

std::vector<Ul2Denoiser> Ul2Mixture(const DataConfig& data) {
  std::vector<Ul2Denoiser> d(data.ul2().denoisers().begin(), data.ul2().denoisers().end());
  return d.empty() ? DefaultUl2Denoisers() : d;
}

RowForm EvalRowForm(const DataConfig& data) {
  if (data.source() != DATA_CORPUS || data.objective() != OBJECTIVE_UL2) return RowForm::kCausalLm;
  for (const Ul2Denoiser& d : Ul2Mixture(data))
    if (d.prefix_lm()) return RowForm::kPrefixLm;
  return RowForm::kCausalLm;
}

std::string SourceName(const SourceConfig& source, int64_t index) {
  return source.name().empty() ? absl::StrCat("source", index) : source.name();
}

absl::StatusOr<TokenArray> SourceRows(const SourceConfig& source, int64_t index,
                                      const DataConfig& data, int64_t rows, int64_t seq_len,
                                      const std::string& field, RowForm form) {
  const std::string name = SourceName(source, index);
  if (rows < 1 || seq_len < 2) {
    return absl::InvalidArgumentError(absl::StrCat(field, "=", rows, " (seq_len ", seq_len,
                                                   "): needs rows >= 1 and seq_len >= 2"));
  }
  if (data.tokenizer().model().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("source '", name, "': needs data.tokenizer.model"));
  }
  absl::StatusOr<ResolvedSource> resolved = ResolveSource(source, index);
  if (!resolved.ok()) return resolved.status();
  absl::StatusOr<std::shared_ptr<const Tokenizer>> tokenizer =
      Tokenizer::LoadShared(data.tokenizer().model(), data.tokenizer().extra_ids());
  if (!tokenizer.ok()) return tokenizer.status();
  absl::StatusOr<std::unique_ptr<DocumentStream>> stream = OpenDocumentStream(
      *resolved, *tokenizer, 0, 1, data.skip_bad_records(), data.max_record_bytes());
  if (!stream.ok()) return stream.status();

  std::vector<int32_t> mode;
  if (form == RowForm::kPrefixLm) {
    for (const Ul2Denoiser& d : Ul2Mixture(data)) {
      if (!d.prefix_lm()) continue;
      absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->ModeTokens(d.mode());
      if (!ids.ok()) return ids.status();
      mode = *ids;
      break;
    }
  }
  if (seq_len <= static_cast<int64_t>(mode.size()) + 3)
    return absl::InvalidArgumentError(
        absl::StrCat("source '", name, "': seq_len ", seq_len, " is too short for prefix-LM rows"));
  const HeldOutRowMaker maker(form, (*tokenizer)->eos_id(), mode, seq_len);
  const int64_t wanted = rows * seq_len;
  TokenArray out;
  out.rows = rows;
  out.seq_len = seq_len;
  std::vector<int32_t> doc;
  StreamPosition at;
  int64_t documents = 0;
  while (static_cast<int64_t>(out.tokens.size()) < wanted) {
    if (absl::Status s = (*stream)->Next(&doc, &at); !s.ok()) return s;
    if (at.epoch > 0) {  // the stream wrapped around: the source is used up
      return absl::FailedPreconditionError(absl::StrCat(
          "source '", name, "' makes only ", static_cast<int64_t>(out.tokens.size()) / seq_len,
          " full rows of ", seq_len, " tokens (", documents, " documents); ", field, "=", rows,
          " asked"));
    }
    ++documents;
    maker.Add(doc, &out.tokens);
  }
  out.tokens.resize(static_cast<size_t>(wanted));
  return out;
}

}  // namespace openmoe
