#include "launch/source_rows.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "data/document_reader.h"
#include "data/document_stream.h"
#include "data/objective.h"
#include "data/tokenizer.h"

namespace openmoe {

Batch CausalBatch(const TokenArray& t, int64_t first, int64_t count) {
  Batch b;
  b.Resize(count, t.seq_len);
  for (int64_t r = 0; r < count; ++r) {
    const int64_t src = first + r;
    if (src >= t.rows) continue;
    const int32_t* row = t.tokens.data() + src * t.seq_len;
    for (int64_t s = 0; s < t.seq_len; ++s) {
      const int64_t i = r * t.seq_len + s;
      b.tokens[i] = row[s];
      b.segment_ids[i] = 1;
      if (s + 1 < t.seq_len) {
        b.targets[i] = row[s + 1];
        b.loss_weights[i] = 1.0f;
      }
    }
  }
  return b;
}

std::string SourceName(const SourceConfig& source, int64_t index) {
  return source.name().empty() ? absl::StrCat("source", index) : source.name();
}

absl::StatusOr<TokenArray> SourceRows(const SourceConfig& source, int64_t index,
                                      const DataConfig& data, int64_t rows, int64_t seq_len,
                                      const std::string& field) {
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

  const CausalLmObjective objective((*tokenizer)->eos_id(), seq_len);
  const int64_t wanted = rows * seq_len;
  TokenArray out;
  out.rows = rows;
  out.seq_len = seq_len;
  std::vector<int32_t> doc;
  Example example;
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
    for (int64_t offset = 0; !objective.Exhausted(doc, offset);) {
      objective.Next(doc, &offset, 0, &example);
      out.tokens.insert(out.tokens.end(), example.tokens.begin(), example.tokens.end());
    }
  }
  out.tokens.resize(static_cast<size_t>(wanted));
  return out;
}

}  // namespace openmoe
