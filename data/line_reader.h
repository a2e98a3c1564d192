// LineReader: the lines of a plain or zstd-compressed file, streamed (a .zst is never
// decompressed whole or to disk). Lines end at '\n'; a trailing '\r' is dropped; a last line
// without '\n' still counts.
//
// Errors are DataLoss / NotFound with one line naming the file (and the line reached): a missing
// or unreadable file, corrupt zstd data, a truncated zstd stream (its last frame does not end).
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace openmoe {

class LineReader {
 public:
  static absl::StatusOr<std::unique_ptr<LineReader>> Open(const std::string& path, bool zstd);
  ~LineReader();

  // The next line (valid until the next call). False at the end of the file.
  absl::StatusOr<bool> Next(std::string_view* line);
  // 1-based number of the line Next() returned last.
  int64_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }

 private:
  LineReader() = default;
  // Appends more decompressed bytes to buffer_; sets eof_ at the end of the input.
  absl::Status Fill();

  std::string path_;
  bool zstd_ = false;
  std::FILE* file_ = nullptr;
  void* dctx_ = nullptr;
  std::string in_;  // compressed input chunk
  size_t in_pos_ = 0;
  size_t in_size_ = 0;
  size_t frame_left_ = 0;  // last ZSTD_decompressStream result (0: at a frame boundary)
  int64_t compressed_read_ = 0;
  bool input_done_ = false;
  bool eof_ = false;
  std::string buffer_;  // decompressed bytes
  size_t pos_ = 0;      // start of the unread part of buffer_
  int64_t line_number_ = 0;
};

}  // namespace openmoe
