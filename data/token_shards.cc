#include "data/token_shards.h"

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/io/checksum.h"
#include "core/io/file.h"
#include "core/io/zstd.h"

namespace openmoe {
namespace {

constexpr char kMagic[] = "OMTOKSH1";
// The index's first line names the format. 2: XXH64 checksums (core/io/checksum.h); format 1
// (FNV-1a checksums) is no longer read.
constexpr char kIndexName[] = "openmoe-token-shards";
constexpr int kIndexFormat = 2;

template <typename T>
void AppendRaw(std::string* out, const T* data, size_t count) {
  out->append(reinterpret_cast<const char*>(data), count * sizeof(T));
}

absl::Status IndexError(const std::string& path, int line, const std::string& what) {
  return absl::DataLossError(absl::StrCat(path, ":", line, ": ", what));
}

}  // namespace

absl::StatusOr<ShardIndex> ReadShardIndex(const std::string& dir) {
  const std::string path = JoinPath(dir, "index.txt");
  auto text = ReadFile(path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status()))
      return absl::NotFoundError(absl::StrCat(
          path, ": no such file (not a token-shard directory; make one with `openmoe prep`)"));
    return text.status();
  }
  ShardIndex index;
  index.dir = dir;
  int line_number = 0;
  bool header = false;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_number;
    if (line.empty()) continue;
    std::vector<std::string> w = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (!header) {
      int format = 0;
      if (w.empty() || w[0] != kIndexName || w.size() > 2 ||
          (w.size() == 2 && !absl::SimpleAtoi(w[1], &format)))
        return IndexError(path, line_number,
                          absl::StrCat("expected '", kIndexName, " ", kIndexFormat, "'"));
      if (format != kIndexFormat)
        return IndexError(
            path, line_number,
            absl::StrCat("token shards of ",
                         w.size() < 2  ? "an old format with no version (FNV checksums)"
                         : format == 1 ? "format 1 (FNV checksums)"
                                       : absl::StrCat("format ", format),
                         "; this build reads format ", kIndexFormat,
                         " (XXH64): re-run `openmoe prep`"));
      header = true;
      continue;
    }
    auto number = [&](const std::string& s, int64_t* v) { return absl::SimpleAtoi(s, v); };
    auto hex = [&](const std::string& s, uint64_t* v) { return absl::SimpleHexAtoi(s, v); };
    bool ok = true;
    if (w.size() == 2 && w[0] == "vocab_size")
      ok = number(w[1], &index.vocab_size);
    else if (w.size() == 2 && w[0] == "pieces")
      ok = number(w[1], &index.pieces);
    else if (w.size() == 2 && w[0] == "tokenizer_checksum")
      ok = hex(w[1], &index.tokenizer_checksum);
    else if (w.size() == 2 && w[0] == "documents")
      ok = number(w[1], &index.documents);
    else if (w.size() == 2 && w[0] == "tokens")
      ok = number(w[1], &index.tokens);
    else if (w.size() == 10 && w[0] == "shard" && w[2] == "documents" && w[4] == "tokens" &&
             w[6] == "bytes" && w[8] == "checksum") {
      ShardFileInfo s;
      s.file = w[1];
      ok = number(w[3], &s.documents) && number(w[5], &s.tokens) && number(w[7], &s.bytes) &&
           hex(w[9], &s.checksum) && s.file.find('/') == std::string::npos;
      index.shards.push_back(s);
    } else {
      return IndexError(path, line_number, absl::StrCat("unrecognised line '", line, "'"));
    }
    if (!ok) return IndexError(path, line_number, absl::StrCat("bad value in '", line, "'"));
  }
  if (!header) return IndexError(path, 1, "empty index");
  int64_t docs = 0, tokens = 0;
  index.first_document.push_back(0);
  for (const ShardFileInfo& s : index.shards) {
    docs += s.documents;
    tokens += s.tokens;
    index.first_document.push_back(docs);
  }
  if (docs != index.documents || tokens != index.tokens)
    return absl::DataLossError(absl::StrCat(path, ": shard lines sum to ", docs, " documents / ",
                                            tokens, " tokens but the header says ", index.documents,
                                            " / ", index.tokens));
  if (index.vocab_size <= 0) return absl::DataLossError(absl::StrCat(path, ": missing vocab_size"));
  return index;
}

absl::StatusOr<TokenShard> LoadTokenShard(const ShardIndex& index, int64_t i) {
  const ShardFileInfo& info = index.shards[static_cast<size_t>(i)];
  const std::string path = JoinPath(index.dir, info.file);
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  if (static_cast<int64_t>(bytes->size()) != info.bytes)
    return absl::DataLossError(absl::StrCat(path, ": size ", bytes->size(),
                                            " bytes but index.txt says ", info.bytes,
                                            " (truncated or replaced shard; re-run openmoe prep)"));
  const uint64_t sum = Xxh64(*bytes);
  if (sum != info.checksum)
    return absl::DataLossError(absl::StrCat(
        path, ": checksum mismatch (index.txt says ", ChecksumHex(info.checksum), ", the file has ",
        ChecksumHex(sum), "); the shard is corrupt: re-run openmoe prep"));
  auto raw = DecompressZstd(*bytes, path);
  if (!raw.ok()) return raw.status();
  const std::string& p = *raw;
  uint64_t header[2];
  if (p.size() < 24 || std::memcmp(p.data(), kMagic, 8) != 0)
    return absl::DataLossError(absl::StrCat(path, ": not a token shard (bad magic)"));
  std::memcpy(header, p.data() + 8, 16);
  const uint64_t docs = header[0], tokens = header[1];
  if (docs != static_cast<uint64_t>(info.documents) ||
      tokens != static_cast<uint64_t>(info.tokens) || p.size() != 24 + 8 * (docs + 1) + 4 * tokens)
    return absl::DataLossError(absl::StrCat(path, ": contents do not match index.txt (", docs,
                                            " documents, ", tokens, " tokens, ", p.size(),
                                            " bytes)"));
  TokenShard shard;
  shard.offsets.resize(docs + 1);
  shard.tokens.resize(tokens);
  std::memcpy(shard.offsets.data(), p.data() + 24, 8 * (docs + 1));
  std::memcpy(shard.tokens.data(), p.data() + 24 + 8 * (docs + 1), 4 * tokens);
  for (uint64_t j = 0; j < docs; ++j)
    if (shard.offsets[j] > shard.offsets[j + 1] || shard.offsets[j + 1] > tokens)
      return absl::DataLossError(absl::StrCat(path, ": document ", j, " has bad offsets"));
  if (shard.offsets[0] != 0 || shard.offsets[docs] != tokens)
    return absl::DataLossError(absl::StrCat(path, ": offsets do not cover the tokens"));
  return shard;
}

TokenShardWriter::TokenShardWriter(std::string dir, int64_t shard_tokens, int64_t vocab_size,
                                   int64_t pieces, uint64_t tokenizer_checksum)
    : shard_tokens_(std::max<int64_t>(1, shard_tokens)) {
  index_.dir = std::move(dir);
  index_.vocab_size = vocab_size;
  index_.pieces = pieces;
  index_.tokenizer_checksum = tokenizer_checksum;
}

absl::Status TokenShardWriter::Add(const std::vector<int32_t>& document) {
  tokens_.insert(tokens_.end(), document.begin(), document.end());
  offsets_.push_back(tokens_.size());
  if (static_cast<int64_t>(tokens_.size()) >= shard_tokens_) return Flush();
  return absl::OkStatus();
}

absl::Status TokenShardWriter::Flush() {
  const uint64_t docs = offsets_.size() - 1;
  if (docs == 0) return absl::OkStatus();
  std::string payload(kMagic, 8);
  const uint64_t header[2] = {docs, tokens_.size()};
  AppendRaw(&payload, header, 2);
  AppendRaw(&payload, offsets_.data(), offsets_.size());
  AppendRaw(&payload, tokens_.data(), tokens_.size());
  const std::string compressed = CompressZstd(payload, 3);
  ShardFileInfo info;
  info.file = absl::StrFormat("shard-%05d.zst", index_.shards.size());
  info.documents = static_cast<int64_t>(docs);
  info.tokens = static_cast<int64_t>(tokens_.size());
  info.bytes = static_cast<int64_t>(compressed.size());
  info.checksum = Xxh64(compressed);
  if (auto s = WriteFileAtomically(JoinPath(index_.dir, info.file), compressed); !s.ok()) return s;
  index_.shards.push_back(info);
  index_.documents += info.documents;
  index_.tokens += info.tokens;
  offsets_.assign(1, 0);
  tokens_.clear();
  return absl::OkStatus();
}

absl::StatusOr<ShardIndex> TokenShardWriter::Finish() {
  if (auto s = Flush(); !s.ok()) return s;
  std::string text = absl::StrCat(kIndexName, " ", kIndexFormat, "\n");
  absl::StrAppend(&text, "vocab_size ", index_.vocab_size, "\n", "pieces ", index_.pieces, "\n",
                  "tokenizer_checksum ", ChecksumHex(index_.tokenizer_checksum), "\n", "documents ",
                  index_.documents, "\n", "tokens ", index_.tokens, "\n");
  index_.first_document.assign(1, 0);
  for (const ShardFileInfo& s : index_.shards) {
    absl::StrAppend(&text, "shard ", s.file, " documents ", s.documents, " tokens ", s.tokens,
                    " bytes ", s.bytes, " checksum ", ChecksumHex(s.checksum), "\n");
    index_.first_document.push_back(index_.first_document.back() + s.documents);
  }
  if (auto s = WriteFileAtomically(JoinPath(index_.dir, "index.txt"), text); !s.ok()) return s;
  return index_;
}

absl::StatusOr<std::shared_ptr<const TokenShard>> LoadSharedTokenShard(const ShardIndex& index,
                                                                       int64_t i) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<const TokenShard>> cache;
  const std::string key = JoinPath(index.dir, index.shards[static_cast<size_t>(i)].file);
  std::lock_guard<std::mutex> lock(mu);
  if (std::shared_ptr<const TokenShard> held = cache[key].lock()) return held;
  absl::StatusOr<TokenShard> loaded = LoadTokenShard(index, i);
  if (!loaded.ok()) return loaded.status();
  auto shard = std::make_shared<const TokenShard>(*std::move(loaded));
  cache[key] = shard;
  return shard;
}

}  // namespace openmoe
