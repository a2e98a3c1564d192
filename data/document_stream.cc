#include "data/document_stream.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "core/io/checksum.h"
#include "data/token_shards.h"

namespace openmoe {
namespace {

absl::Status EmptySource(const ResolvedSource& source, int64_t shard, int64_t num_shards,
                         const std::string& detail) {
  return absl::FailedPreconditionError(absl::StrCat(
      "data source '", source.name, "': empty source (no document for data shard ", shard, " of ",
      num_shards, " in a whole pass over ", source.files.front(),
      source.files.size() > 1 ? absl::StrCat(" and ", source.files.size() - 1, " more files") : "",
      detail.empty() ? "" : "; ", detail, ")"));
}

class TextStream : public DocumentStream {
 public:
  TextStream(ResolvedSource source, std::unique_ptr<DocumentReader> reader,
             std::shared_ptr<const Tokenizer> tokenizer, int64_t shard, int64_t num_shards)
      : source_(std::move(source)),
        reader_(std::move(reader)),
        tokenizer_(std::move(tokenizer)),
        shard_(shard),
        num_shards_(num_shards) {}

  absl::Status Next(std::vector<int32_t>* tokens, StreamPosition* at) override {
    while (true) {
      auto more = reader_->Next(&doc_);
      if (!more.ok()) return more.status();
      if (!*more) {
        if (documents_in_pass_ == 0 && !seeked_past_start_) {
          CounterList c;
          reader_->AddCounters("", &c);
          return EmptySource(source_, shard_, num_shards_,
                             absl::StrCat(c[0].second, " bad records skipped, ", c[1].second,
                                          " blank lines, ", c[2].second, " files skipped"));
        }
        ++epoch_;
        documents_in_pass_ = 0;
        seeked_past_start_ = false;
        if (auto s = reader_->Restart(0); !s.ok()) return s;
        continue;
      }
      if (auto s = tokenizer_->Encode(doc_.text, tokens); !s.ok())
        return absl::InternalError(absl::StrCat(doc_.where, ": ", s.message()));
      if (tokens->empty()) {
        ++empty_documents_;
        continue;
      }
      ++documents_in_pass_;  // only usable documents: a source of empty ones is empty
      ++documents_;
      tokens_ += static_cast<int64_t>(tokens->size());
      text_bytes_ += static_cast<int64_t>(doc_.text.size());
      // The tokens are what is kept; a huge text need not stay resident while they are cut.
      if (doc_.text.size() > (size_t{1} << 20)) std::string().swap(doc_.text);
      *at = {epoch_, doc_.record};
      return absl::OkStatus();
    }
  }

  absl::Status Seek(const StreamPosition& p) override {
    epoch_ = p.epoch;
    documents_in_pass_ = 0;
    seeked_past_start_ = p.record > 0;
    return reader_->Restart(p.record);
  }

  void AddCounters(const std::string& prefix, CounterList* out) const override {
    out->push_back({prefix + "documents", documents_});
    out->push_back({prefix + "tokens", tokens_});
    out->push_back({prefix + "text_bytes", text_bytes_});
    out->push_back({prefix + "epoch", epoch_});
    out->push_back({prefix + "empty_documents", empty_documents_});
    reader_->AddCounters(prefix, out);
  }

 private:
  ResolvedSource source_;
  std::unique_ptr<DocumentReader> reader_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  int64_t shard_, num_shards_;
  Document doc_;
  int64_t epoch_ = 0;
  int64_t documents_in_pass_ = 0;
  bool seeked_past_start_ = false;  // a pass resumed mid-way may legitimately end with no document
  int64_t documents_ = 0, tokens_ = 0, text_bytes_ = 0, empty_documents_ = 0;
};

// Token shards of one or more shard directories, documents numbered across them in order.
class ShardStream : public DocumentStream {
 public:
  ShardStream(ResolvedSource source, std::vector<ShardIndex> indexes, int64_t vocab_size,
              int64_t shard, int64_t num_shards, bool skip_bad)
      : source_(std::move(source)),
        indexes_(std::move(indexes)),
        vocab_size_(vocab_size),
        shard_(shard),
        num_shards_(num_shards),
        skip_bad_(skip_bad) {
    first_.push_back(0);
    for (const ShardIndex& index : indexes_) {
      for (size_t i = 0; i < index.shards.size(); ++i) {
        files_.push_back({&index, static_cast<int64_t>(i)});
        first_.push_back(first_.back() + index.shards[i].documents);
      }
    }
    total_ = first_.back();
  }

  absl::Status Next(std::vector<int32_t>* tokens, StreamPosition* at) override {
    while (true) {
      // The first record >= next_ of this shard.
      int64_t d =
          next_ + ((shard_ - next_ % num_shards_) % num_shards_ + num_shards_) % num_shards_;
      if (d >= total_) {
        if (documents_in_pass_ == 0 && !seeked_past_start_)
          return EmptySource(
              source_, shard_, num_shards_,
              absl::StrCat(total_, " documents in all, ", bad_shards_.size(),
                           " bad shards skipped, ", bad_records_, " bad documents skipped"));
        ++epoch_;
        next_ = 0;
        documents_in_pass_ = 0;
        seeked_past_start_ = false;
        continue;
      }
      const int64_t f =
          static_cast<int64_t>(std::upper_bound(first_.begin(), first_.end(), d) - first_.begin()) -
          1;
      if (bad_shards_.count(f)) {
        next_ = first_[f + 1];
        continue;
      }
      if (f != loaded_) {
        auto shard = LoadSharedTokenShard(*files_[f].index, files_[f].shard);
        if (!shard.ok()) {
          if (!skip_bad_) return shard.status();
          bad_shards_.insert(f);
          bad_records_ += (first_[f + 1] - first_[f] + num_shards_ - 1) / num_shards_;
          continue;
        }
        data_ = std::move(*shard);
        loaded_ = f;
      }
      next_ = d + 1;
      const uint64_t j = static_cast<uint64_t>(d - first_[f]);
      const auto begin = data_->tokens.begin() + static_cast<std::ptrdiff_t>(data_->offsets[j]);
      const auto end = data_->tokens.begin() + static_cast<std::ptrdiff_t>(data_->offsets[j + 1]);
      auto bad = std::find_if(begin, end, [&](int32_t t) { return t < 0 || t >= vocab_size_; });
      if (bad != end) {
        const ShardIndex& index = *files_[f].index;
        const std::string where =
            absl::StrCat(JoinPathForMessage(index.dir, index.shards[files_[f].shard].file),
                         ": document ", j, " (record ", d, ")");
        if (!skip_bad_)
          return absl::OutOfRangeError(absl::StrCat(where, ": token id ", *bad, " at position ",
                                                    bad - begin, " is outside the vocabulary [0, ",
                                                    vocab_size_, ")"));
        ++bad_records_;
        continue;
      }
      if (begin == end) {
        ++empty_documents_;
        continue;
      }
      tokens->assign(begin, end);
      ++documents_in_pass_;
      ++documents_;
      tokens_ += static_cast<int64_t>(tokens->size());
      *at = {epoch_, d};
      return absl::OkStatus();
    }
  }

  absl::Status Seek(const StreamPosition& p) override {
    epoch_ = p.epoch;
    next_ = p.record;
    documents_in_pass_ = 0;
    seeked_past_start_ = p.record > shard_;
    return absl::OkStatus();
  }

  void AddCounters(const std::string& prefix, CounterList* out) const override {
    out->push_back({prefix + "documents", documents_});
    out->push_back({prefix + "tokens", tokens_});
    out->push_back({prefix + "epoch", epoch_});
    out->push_back({prefix + "empty_documents", empty_documents_});
    out->push_back({prefix + "bad_records", bad_records_});
    out->push_back({prefix + "bad_shards", static_cast<int64_t>(bad_shards_.size())});
    // Shards have no files to skip; the counter is there so every source reports the same names.
    out->push_back({prefix + "skipped_files", 0});
  }

 private:
  static std::string JoinPathForMessage(const std::string& dir, const std::string& file) {
    return dir.empty() || dir.back() == '/' ? dir + file : dir + "/" + file;
  }
  struct FileRef {
    const ShardIndex* index;
    int64_t shard;
  };
  ResolvedSource source_;
  std::vector<ShardIndex> indexes_;
  int64_t vocab_size_, shard_, num_shards_;
  bool skip_bad_;
  std::vector<FileRef> files_;
  std::vector<int64_t> first_;  // first record of each file, plus the total
  int64_t total_ = 0;
  int64_t loaded_ = -1;
  std::shared_ptr<const TokenShard> data_;  // shared with this rank's other chips' streams
  std::set<int64_t> bad_shards_;
  int64_t next_ = 0, epoch_ = 0, documents_in_pass_ = 0;
  bool seeked_past_start_ = false;
  int64_t documents_ = 0, tokens_ = 0, empty_documents_ = 0, bad_records_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DocumentStream>> OpenDocumentStream(
    const ResolvedSource& source, std::shared_ptr<const Tokenizer> tokenizer, int64_t shard,
    int64_t num_shards, bool skip_bad_records, int64_t max_record_bytes) {
  if (tokenizer == nullptr)
    return absl::InvalidArgumentError(
        absl::StrCat("data source '", source.name, "': needs data.tokenizer.model"));
  if (source.format != FORMAT_TOKEN_SHARDS) {
    auto reader =
        DocumentReader::Open(source, shard, num_shards, skip_bad_records, max_record_bytes);
    if (!reader.ok()) return reader.status();
    return std::unique_ptr<DocumentStream>(
        new TextStream(source, std::move(*reader), std::move(tokenizer), shard, num_shards));
  }
  std::vector<ShardIndex> indexes;
  for (const std::string& dir : source.files) {
    auto index = ReadShardIndex(dir);
    if (!index.ok()) return index.status();
    if (index->tokenizer_checksum != tokenizer->model_checksum() ||
        index->pieces != tokenizer->pieces())
      return absl::FailedPreconditionError(absl::StrCat(
          dir, "/index.txt: the shards were made with another tokenizer (checksum ",
          ChecksumHex(index->tokenizer_checksum), ", ", index->pieces,
          " pieces) than data.tokenizer.model ", tokenizer->name(), " (",
          ChecksumHex(tokenizer->model_checksum()), ", ", tokenizer->pieces(), " pieces)"));
    if (index->documents == 0) {
      if (!skip_bad_records)
        return absl::FailedPreconditionError(
            absl::StrCat(dir, "/index.txt: empty source (no documents)"));
    }
    indexes.push_back(std::move(*index));
  }
  return std::unique_ptr<DocumentStream>(new ShardStream(
      source, std::move(indexes), tokenizer->vocab_size(), shard, num_shards, skip_bad_records));
}

}  // namespace openmoe
