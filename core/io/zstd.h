// zstd helpers: whole-buffer compression for token shards and fixtures, a streaming decompressor
// for jsonl.zst (LineReader), and a streaming writer for jsonl.zst corpora.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace openmoe {

std::string CompressZstd(std::string_view bytes, int level = 3);
// Decompresses one or more concatenated frames. DataLoss naming `name` when the data is corrupt
// or truncated (a frame that does not end).
absl::StatusOr<std::string> DecompressZstd(std::string_view bytes, const std::string& name);

// Streams bytes into a .zst file (written to a temporary name, renamed on Close()).
class ZstdFileWriter {
 public:
  static absl::StatusOr<std::unique_ptr<ZstdFileWriter>> Create(const std::string& path,
                                                                int level = 3);
  ~ZstdFileWriter();
  absl::Status Write(std::string_view bytes);
  absl::Status Close();

 private:
  ZstdFileWriter() = default;
  absl::Status Drain(bool end);
  std::string path_, tmp_;
  std::FILE* file_ = nullptr;
  void* cctx_ = nullptr;
  std::string pending_;
};

}  // namespace openmoe
