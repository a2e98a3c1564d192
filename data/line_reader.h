// LineReader: the lines of a plain or zstd-compressed file, streamed (a .zst is never
// decompressed whole or to disk). Lines end at '\n'; a trailing '\r' is dropped; a last line
// without '\n' still counts.
//
// Errors are DataLoss / NotFound with one line naming the file (and the line reached): a missing
// or unreadable file, corrupt zstd data (with the compressed offset at which the decoder failed,
// to within a few KiB), a truncated zstd stream (its last frame does not end). After such an
// error the rest of the file is lost.
//
// A line longer than max_line_bytes (0: no limit) is never held whole: its bytes are read past
// and Next() returns ResourceExhausted naming file:line and the length; the next call goes on
// with the following line. So memory stays within about twice max_line_bytes.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/io/zstd.h"

namespace openmoe {

class LineReader {
 public:
  static absl::StatusOr<std::unique_ptr<LineReader>> Open(const std::string& path, bool zstd,
                                                          int64_t max_line_bytes = 0);
  ~LineReader();

  // The next line (valid until the next call). False at the end of the file.
  absl::StatusOr<bool> Next(std::string_view* line);
  // Gives back the memory a long line grew the buffer to (the line returned last is then
  // invalid): a caller done with a huge line calls it so the next stage does not pay for both.
  void ReleaseLongLineMemory();
  // 1-based number of the line Next() returned last.
  int64_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }

 private:
  LineReader() = default;
  // Appends more decompressed bytes to buffer_; sets eof_ at the end of the input.
  absl::Status Fill();
  // Reads past the rest of an over-long line whose first `seen` bytes were in buffer_[pos_..].
  absl::Status SkipLongLine(int64_t seen);

  std::string path_;
  bool zstd_ = false;
  int64_t max_line_bytes_ = 0;
  std::FILE* file_ = nullptr;
  std::unique_ptr<ZstdDecompressor> decoder_;  // when zstd_
  std::string in_;  // compressed input chunk
  size_t in_pos_ = 0;
  size_t in_size_ = 0;
  int64_t compressed_read_ = 0;
  bool input_done_ = false;
  bool eof_ = false;
  std::string buffer_;  // decompressed bytes
  size_t pos_ = 0;      // start of the unread part of buffer_
  int64_t line_number_ = 0;
};

}  // namespace openmoe
