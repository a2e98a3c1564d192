#include "data/document_reader.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/io/file.h"
#include "core/io/utf8.h"

namespace openmoe {
namespace {

// Text-tree files: valid UTF-8 without NUL bytes (binaries, images and the like are not).
bool IsUtf8Text(std::string_view s) {
  return s.find('\0') == std::string_view::npos && FindInvalidUtf8(s) == std::string_view::npos;
}

bool StartsWithZstdMagic(const std::string& path) {
  unsigned char magic[4] = {0, 0, 0, 0};
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  const size_t n = std::fread(magic, 1, 4, f);
  std::fclose(f);
  return n == 4 && magic[0] == 0x28 && magic[1] == 0xB5 && magic[2] == 0x2F && magic[3] == 0xFD;
}

bool HasJsonlName(const std::string& path) {
  return absl::EndsWith(path, ".jsonl") || absl::EndsWith(path, ".jsonl.zst") ||
         absl::EndsWith(path, ".json") || absl::EndsWith(path, ".json.zst");
}

}  // namespace

std::string LanguageOfPath(const std::string& path) {
  static const std::map<std::string, std::string> kByExtension = {
      {".c", "c"},
      {".h", "c"},
      {".cc", "c++"},
      {".cpp", "c++"},
      {".cxx", "c++"},
      {".hh", "c++"},
      {".hpp", "c++"},
      {".hxx", "c++"},
      {".tcc", "c++"},
      {".py", "python"},
      {".go", "go"},
      {".rs", "rust"},
      {".java", "java"},
      {".js", "javascript"},
      {".ts", "typescript"},
      {".pl", "perl"},
      {".pm", "perl"},
      {".rb", "ruby"},
      {".sh", "shell"},
      {".bash", "shell"},
      {".lua", "lua"},
      {".el", "emacs-lisp"},
      {".scm", "scheme"},
      {".hs", "haskell"},
      {".ml", "ocaml"},
      {".s", "assembly"},
      {".S", "assembly"},
      {".cmake", "cmake"},
      {".proto", "protobuf"},
      {".sql", "sql"},
      {".md", "markdown"},
      {".rst", "restructuredtext"},
      {".txt", "text"},
      {".pod", "pod"},
      {".tex", "tex"},
      {".html", "html"},
      {".xml", "xml"},
      {".json", "json"},
  };
  const size_t slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base == "Makefile" || base == "makefile" || base == "GNUmakefile") return "makefile";
  const size_t dot = base.rfind('.');
  if (dot == std::string::npos || dot == 0) return "";
  auto it = kByExtension.find(base.substr(dot));
  return it == kByExtension.end() ? "" : it->second;
}

absl::StatusOr<ResolvedSource> ResolveSource(const SourceConfig& config, int64_t index) {
  ResolvedSource r;
  r.config = config;
  r.name = config.name().empty() ? absl::StrCat("source", index) : config.name();
  const std::string where = absl::StrCat("data.sources[", index, "] (", r.name, ")");
  if (config.paths_size() == 0)
    return absl::InvalidArgumentError(absl::StrCat(where, ": no paths"));
  SourceFormat format = FORMAT_AUTO;
  auto settle = [&](SourceFormat f, const std::string& path) -> absl::Status {
    // jsonl and jsonl.zst files mix freely (each file's own name decides compression).
    auto family = [](SourceFormat x) { return x == FORMAT_JSONL_ZST ? FORMAT_JSONL : x; };
    if (format != FORMAT_AUTO && family(format) != family(f))
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", path, " is ", SourceFormat_Name(f), " but earlier paths are ",
                       SourceFormat_Name(format)));
    if (format == FORMAT_AUTO) format = f;
    return absl::OkStatus();
  };
  for (const std::string& path : config.paths()) {
    if (!PathExists(path))
      return absl::NotFoundError(absl::StrCat(where, ": ", path, ": no such file or directory"));
    const bool dir = IsDirectory(path);
    SourceFormat f = config.format();
    if (dir && PathExists(JoinPath(path, "index.txt")) &&
        (f == FORMAT_AUTO || f == FORMAT_TOKEN_SHARDS)) {
      if (auto s = settle(FORMAT_TOKEN_SHARDS, path); !s.ok()) return s;
      r.files.push_back(path);
      continue;
    }
    if (f == FORMAT_TOKEN_SHARDS)
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": ", path,
          " is not a token-shard directory (no index.txt; make one with `openmoe prep`)"));
    if (f == FORMAT_AUTO) f = dir ? FORMAT_TEXT_TREE : FORMAT_JSONL;
    if (auto s = settle(f, path); !s.ok()) return s;
    if (!dir) {
      if (f == FORMAT_TEXT_TREE)
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": ", path, " is a file, FORMAT_TEXT_TREE needs a directory"));
      r.files.push_back(path);
      continue;
    }
    auto listed = ListFilesRecursive(path);
    if (!listed.ok()) return listed.status();
    for (const std::string& file : *listed) {
      if (f == FORMAT_TEXT_TREE) {
        if (config.extensions_size() > 0) {
          bool keep = false;
          for (const std::string& ext : config.extensions())
            keep = keep || absl::EndsWith(file, ext);
          if (!keep) continue;
        }
        r.files.push_back(file);
      } else if (HasJsonlName(file)) {
        r.files.push_back(file);
      }
    }
  }
  r.format = format;
  if (r.files.empty())
    return absl::InvalidArgumentError(absl::StrCat(where, ": empty source (no files in ",
                                                   config.paths(0),
                                                   config.paths_size() > 1 ? " ..." : "", ")"));
  return r;
}

absl::StatusOr<std::unique_ptr<DocumentReader>> DocumentReader::Open(const ResolvedSource& source,
                                                                     int64_t shard,
                                                                     int64_t num_shards,
                                                                     bool skip_bad_records,
                                                                     int64_t max_record_bytes) {
  if (source.format == FORMAT_TOKEN_SHARDS)
    return absl::InvalidArgumentError(absl::StrCat(source.name, ": token shards are not text"));
  std::unique_ptr<DocumentReader> r(new DocumentReader());
  r->source_ = source;
  r->shard_ = shard;
  r->num_shards_ = num_shards;
  r->skip_bad_ = skip_bad_records;
  r->max_record_bytes_ = std::max<int64_t>(0, max_record_bytes);
  r->fields_.resize(source.config.lang_field().empty() ? 1 : 2);
  r->fields_[0].name = source.config.text_field();
  if (r->fields_.size() > 1) r->fields_[1].name = source.config.lang_field();
  if (auto s = r->Restart(0); !s.ok()) return s;
  return r;
}

absl::Status DocumentReader::Restart(int64_t record) {
  file_ = 0;
  lines_.reset();
  next_record_ = 0;
  skip_until_ = record;
  return absl::OkStatus();
}

absl::Status DocumentReader::Bad(absl::Status status) {
  if (!skip_bad_) return status;
  ++bad_records_;
  return absl::OkStatus();
}

absl::StatusOr<bool> DocumentReader::Next(Document* doc) {
  return source_.format == FORMAT_TEXT_TREE ? NextTreeFile(doc) : NextJsonl(doc);
}

absl::StatusOr<bool> DocumentReader::NextJsonl(Document* doc) {
  while (file_ < source_.files.size()) {
    const std::string& path = source_.files[file_];
    if (lines_ == nullptr) {
      // Compressed when the name says so or the bytes start with the zstd magic number.
      auto opened = LineReader::Open(
          path, absl::EndsWith(path, ".zst") || StartsWithZstdMagic(path), max_record_bytes_);
      if (!opened.ok()) {
        // A missing or unreadable file is never skipped: the source is misconfigured.
        return opened.status();
      }
      lines_ = std::move(*opened);
    }
    std::string_view line;
    auto more = lines_->Next(&line);
    if (absl::IsResourceExhausted(more.status())) {
      // An over-long line: a record like any other (it counts for sharding), read past.
      const int64_t record = next_record_++;
      if (record < skip_until_ || record % num_shards_ != shard_) continue;
      if (auto s = Bad(more.status()); !s.ok()) return s;
      continue;
    }
    if (!more.ok()) {
      // Corrupt or truncated zstd: the rest of this file is lost; skip it when allowed.
      if (auto s = Bad(more.status()); !s.ok()) return s;
      lines_.reset();
      ++file_;
      continue;
    }
    if (!*more) {
      lines_.reset();
      ++file_;
      continue;
    }
    const int64_t record = next_record_++;
    if (record < skip_until_ || record % num_shards_ != shard_) continue;
    const std::string where = absl::StrCat(path, ":", lines_->line_number());
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) {
      ++blank_lines_;
      continue;
    }
    if (auto s = ParseJsonObject(line, &fields_); !s.ok()) {
      if (auto b = Bad(
              absl::InvalidArgumentError(absl::StrCat(where, ": malformed JSON: ", s.message())));
          !b.ok())
        return b;
      continue;
    }
    const JsonFieldRequest& text = fields_[0];
    if (!text.found || !text.is_string) {
      const std::string problem = text.found ? "is not a string" : "is missing";
      if (auto b = Bad(absl::InvalidArgumentError(absl::StrCat(
              where, ": field \"", text.name, "\" ", problem, " (data.sources.text_field)")));
          !b.ok())
        return b;
      continue;
    }
    if (line.size() > (size_t{1} << 20)) lines_->ReleaseLongLineMemory();
    doc->text = std::move(fields_[0].value);
    doc->lang = fields_.size() > 1 && fields_[1].is_string ? fields_[1].value : "";
    if (fields_.size() > 1) languages_.Add(doc->lang);
    doc->record = record;
    doc->where = where;
    return true;
  }
  return false;
}

absl::StatusOr<bool> DocumentReader::NextTreeFile(Document* doc) {
  while (file_ < source_.files.size()) {
    const std::string& path = source_.files[file_++];
    const int64_t record = next_record_++;
    if (record < skip_until_ || record % num_shards_ != shard_) continue;
    // The size decides before any byte is read: a huge file is never loaded.
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (!ec && static_cast<int64_t>(size) > source_.config.max_file_bytes()) {
      ++skipped_files_;
      continue;
    }
    if (!ec && max_record_bytes_ > 0 && static_cast<int64_t>(size) > max_record_bytes_) {
      if (auto b = Bad(absl::ResourceExhaustedError(
              absl::StrCat(path, ": record of ", size,
                           " bytes is longer than data.max_record_bytes=", max_record_bytes_)));
          !b.ok())
        return b;
      continue;
    }
    auto bytes = ReadFile(path);
    if (!bytes.ok()) {
      if (auto b = Bad(bytes.status()); !b.ok()) return b;
      continue;
    }
    if (static_cast<int64_t>(bytes->size()) > source_.config.max_file_bytes() ||
        !IsUtf8Text(*bytes)) {
      ++skipped_files_;
      continue;
    }
    doc->text = std::move(*bytes);
    doc->lang = LanguageOfPath(path);
    doc->record = record;
    doc->where = path;
    return true;
  }
  return false;
}

void DocumentReader::AddCounters(const std::string& prefix, CounterList* out) const {
  out->push_back({prefix + "bad_records", bad_records_});
  out->push_back({prefix + "blank_lines", blank_lines_});
  out->push_back({prefix + "skipped_files", skipped_files_});
  if (!source_.config.lang_field().empty()) languages_.AddCounters(prefix, out);
}

}  // namespace openmoe
