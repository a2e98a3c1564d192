// DocumentReader: one pass over the text documents of one source (jsonl, jsonl.zst, or a tree of
// text / source files), in a fixed order, optionally keeping only one shard's records.
//
// Records: for jsonl every line is a record (numbered 0, 1, ... over the source's files in
// order); for a text tree every file (after the extension filter) is. Shard k of n keeps the
// records with index % n == k; the others are skipped without being parsed, so the shards are
// disjoint and each reports only its own bad records.
//
// Bad input is reported as one line naming the file and line: a malformed JSON line, a record
// whose text field is missing or not a string, a missing file, corrupt or truncated zstd. With
// skip_bad_records such a record (or the rest of a broken .zst file) is skipped and counted
// instead. Also bad: a record longer than max_record_bytes (data.max_record_bytes: a jsonl line,
// the decompressed line of a .jsonl.zst, a tree file), which is never held whole in memory, and a
// JSON string that is not valid UTF-8 or leaves a lone surrogate (the message gives the byte
// offset in the line). Blank jsonl lines, and tree files that are not UTF-8 text or are larger
// than max_file_bytes, are skipped and counted (they are not errors).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/io/json.h"
#include "data/language_counts.h"
#include "data/line_reader.h"
#include "proto/job.pb.h"

namespace openmoe {

struct Document {
  std::string text;
  std::string lang;    // the lang_field value, or the language of a tree file's extension
  int64_t record = 0;  // index of the record in the source
  std::string where;   // "file:line" or the file, for messages
};

// Counters a reader (or a stream above it) accumulates, name -> value.
using CounterList = std::vector<std::pair<std::string, int64_t>>;

// A source's paths resolved to files and a format (FORMAT_AUTO decided).
struct ResolvedSource {
  std::string name;
  SourceFormat format = FORMAT_AUTO;
  std::vector<std::string> files;  // jsonl / tree files; for token shards: the shard directories
  SourceConfig config;
};

// Resolves paths: a directory with index.txt is token shards; with FORMAT_AUTO any other
// directory is a text tree and a file is jsonl (jsonl.zst when it ends in .zst); with
// FORMAT_JSONL / FORMAT_JSONL_ZST a directory means every *.jsonl / *.jsonl.zst file under it.
// NotFound for a missing path, InvalidArgument for mixed formats or a source with no paths.
absl::StatusOr<ResolvedSource> ResolveSource(const SourceConfig& config, int64_t index);

// The language of a source file from its extension ("python", "c", "go", ...; "" if unknown).
std::string LanguageOfPath(const std::string& path);

class DocumentReader {
 public:
  static absl::StatusOr<std::unique_ptr<DocumentReader>> Open(
      const ResolvedSource& source, int64_t shard, int64_t num_shards, bool skip_bad_records,
      int64_t max_record_bytes = DataConfig::default_instance().max_record_bytes());
  // The next document of this shard in this pass; false at the end of the pass.
  absl::StatusOr<bool> Next(Document* doc);
  // Starts the pass over; then skips to the first record >= `record`.
  absl::Status Restart(int64_t record = 0);
  // Records seen so far in this pass (the index of the next record).
  int64_t next_record() const { return next_record_; }
  // bad_records, blank_lines, skipped_files; with a lang_field, then the documents per language
  // (LanguageCounts: "lang.<language>.documents", a fixed list of names).
  void AddCounters(const std::string& prefix, CounterList* out) const;

 private:
  DocumentReader() = default;
  absl::StatusOr<bool> NextJsonl(Document* doc);
  absl::StatusOr<bool> NextTreeFile(Document* doc);
  absl::Status Bad(absl::Status status);  // returns OK (and counts) when skipping

  ResolvedSource source_;
  int64_t shard_ = 0;
  int64_t num_shards_ = 1;
  bool skip_bad_ = false;
  int64_t max_record_bytes_ = 0;  // 0: no limit
  size_t file_ = 0;               // index into source_.files
  std::unique_ptr<LineReader> lines_;
  int64_t next_record_ = 0;
  int64_t skip_until_ = 0;  // records before this are skipped without parsing
  std::vector<JsonFieldRequest> fields_;
  // Counters.
  int64_t bad_records_ = 0;
  int64_t blank_lines_ = 0;
  int64_t skipped_files_ = 0;
  // Documents returned per lang_field value (only with a lang_field: then every chip and rank
  // reports the same counter names).
  LanguageCounts languages_;
};

}  // namespace openmoe
