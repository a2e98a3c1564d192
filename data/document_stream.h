// DocumentStream: the endless stream of tokenized documents of one source for one data shard.
//
// Shard k of n gets the documents whose record index (jsonl line, tree file, or document number
// in token shards) is congruent to k mod n, so shards are disjoint and their union is the whole
// source. At the end of a pass the next epoch starts over from the first record, in the same
// order. Empty documents (no tokens) are skipped and counted.
//
// Two kinds: text (a DocumentReader plus the tokenizer, tokenizing on the fly) and token shards
// (made by `openmoe prep`; their tokenizer must be the job's, and every id is checked against the
// vocabulary). Bad input stops with one line naming file and record, or with skip_bad_records is
// skipped and counted. A pass that yields no document for this shard is an error ("empty source").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/document_reader.h"
#include "data/tokenizer.h"

namespace openmoe {

// Where a document sits in the stream: pass number and record index.
struct StreamPosition {
  int64_t epoch = 0;
  int64_t record = 0;
};

class DocumentStream {
 public:
  virtual ~DocumentStream() = default;
  // The next document's tokens and its position.
  virtual absl::Status Next(std::vector<int32_t>* tokens, StreamPosition* at) = 0;
  // Makes the next Next() return the first document at or after `p`.
  virtual absl::Status Seek(const StreamPosition& p) = 0;
  // Appends counters: documents, tokens, epochs, bad_records, ...; names start with `prefix`.
  virtual void AddCounters(const std::string& prefix, CounterList* out) const = 0;
};

// Opens the stream for `source` (resolved). The tokenizer is required for text sources, and for
// token shards is checked against the shards' index.
absl::StatusOr<std::unique_ptr<DocumentStream>> OpenDocumentStream(
    const ResolvedSource& source, std::shared_ptr<const Tokenizer> tokenizer, int64_t shard,
    int64_t num_shards, bool skip_bad_records,
    int64_t max_record_bytes = DataConfig::default_instance().max_record_bytes());

}  // namespace openmoe
