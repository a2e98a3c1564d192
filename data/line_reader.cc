#include "data/line_reader.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/io/file.h"
#include "core/io/zstd.h"

namespace openmoe {
namespace {
constexpr size_t kChunk = 1 << 17;
// Compressed bytes handed to the decoder per call: the decoder does not say where in its input
// it failed, so a small feed is what makes the reported offset of corrupt data meaningful.
constexpr size_t kFeed = 4096;
}  // namespace

absl::StatusOr<std::unique_ptr<LineReader>> LineReader::Open(const std::string& path, bool zstd,
                                                             int64_t max_line_bytes) {
  std::unique_ptr<LineReader> r(new LineReader());
  r->path_ = path;
  r->zstd_ = zstd;
  r->max_line_bytes_ = max_line_bytes;
  r->file_ = std::fopen(path.c_str(), "rb");
  if (r->file_ == nullptr) {
    if (!PathExists(path)) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
  }
  if (IsDirectory(path))
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, not a file"));
  if (zstd) {
    r->decoder_ = std::make_unique<ZstdDecompressor>();
    r->in_.resize(kChunk);
  }
  return r;
}

LineReader::~LineReader() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status LineReader::Fill() {
  if (!zstd_) {
    const size_t old = buffer_.size();
    buffer_.resize(old + kChunk);
    const size_t n = std::fread(buffer_.data() + old, 1, kChunk, file_);
    buffer_.resize(old + n);
    if (n == 0) {
      if (std::ferror(file_))
        return absl::DataLossError(absl::StrCat(path_, ": read error after line ", line_number_));
      eof_ = true;
    }
    return absl::OkStatus();
  }
  const size_t out_chunk = ZstdDecompressor::OutputChunkSize();
  while (true) {
    if (in_pos_ == in_size_ && !input_done_) {
      in_size_ = std::fread(in_.data(), 1, kChunk, file_);
      in_pos_ = 0;
      compressed_read_ += static_cast<int64_t>(in_size_);
      if (in_size_ == 0) {
        if (std::ferror(file_))
          return absl::DataLossError(absl::StrCat(path_, ": read error after line ", line_number_));
        input_done_ = true;
      }
    }
    if (input_done_ && in_pos_ == in_size_) {
      if (compressed_read_ == 0)
        return absl::DataLossError(absl::StrCat(path_, ": empty file, not a zstd stream"));
      if (decoder_->frame_left() != 0) {
        // Input is exhausted but the decoder may still hold output: drain it once more.
        const size_t old = buffer_.size();
        buffer_.resize(old + out_chunk);
        std::string_view none;
        const absl::StatusOr<size_t> n = decoder_->Decode(&none, buffer_.data() + old, out_chunk);
        buffer_.resize(old + (n.ok() ? *n : 0));
        if (n.ok() && *n > 0) return absl::OkStatus();
        return absl::DataLossError(absl::StrCat(
            path_, ": truncated zstd stream (the last frame does not end; ", compressed_read_,
            " compressed bytes, ", line_number_, " complete lines before it)"));
      }
      eof_ = true;
      return absl::OkStatus();
    }
    const size_t old = buffer_.size();
    buffer_.resize(old + out_chunk);
    const size_t feed = std::min(kFeed, in_size_ - in_pos_);
    std::string_view in(in_.data() + in_pos_, feed);
    const absl::StatusOr<size_t> n = decoder_->Decode(&in, buffer_.data() + old, out_chunk);
    buffer_.resize(old + (n.ok() ? *n : 0));
    if (!n.ok()) {
      // The input consumed when the error was seen: the end of this call's feed (the decoder
      // consumes none of a feed it fails on).
      const int64_t at = compressed_read_ - static_cast<int64_t>(in_size_ - in_pos_ - feed);
      return absl::DataLossError(absl::StrCat(path_, ": corrupt zstd data near compressed byte ",
                                              at, " (after line ", line_number_,
                                              "): ", n.status().message()));
    }
    in_pos_ += feed - in.size();
    if (*n > 0) return absl::OkStatus();
  }
}

void LineReader::ReleaseLongLineMemory() {
  if (buffer_.capacity() <= 8 * kChunk) return;
  buffer_.erase(0, pos_);
  pos_ = 0;
  buffer_.shrink_to_fit();
}

absl::Status LineReader::SkipLongLine(int64_t seen) {
  const int64_t line = line_number_ + 1;
  int64_t length = seen;
  buffer_.clear();
  pos_ = 0;
  while (true) {
    if (auto s = Fill(); !s.ok()) return s;
    const size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      length += static_cast<int64_t>(nl);
      pos_ = nl + 1;
      break;
    }
    length += static_cast<int64_t>(buffer_.size());
    buffer_.clear();
    if (eof_) break;
  }
  line_number_ = line;
  return absl::ResourceExhaustedError(absl::StrCat(
      path_, ":", line, ": record of ", length, " bytes", zstd_ ? " (decompressed)" : "",
      " is longer than data.max_record_bytes=", max_line_bytes_));
}

absl::StatusOr<bool> LineReader::Next(std::string_view* line) {
  const size_t max = max_line_bytes_ > 0 ? static_cast<size_t>(max_line_bytes_) : 0;
  size_t scan = pos_;
  while (true) {
    const size_t nl = buffer_.find('\n', scan);
    if (nl != std::string::npos) {
      if (max > 0 && nl - pos_ > max) {
        ++line_number_;
        const size_t length = nl - pos_;
        pos_ = nl + 1;
        return absl::ResourceExhaustedError(
            absl::StrCat(path_, ":", line_number_, ": record of ", length, " bytes",
                         zstd_ ? " (decompressed)" : "",
                         " is longer than data.max_record_bytes=", max_line_bytes_));
      }
      size_t end = nl;
      if (end > pos_ && buffer_[end - 1] == '\r') --end;
      *line = std::string_view(buffer_.data() + pos_, end - pos_);
      pos_ = nl + 1;
      ++line_number_;
      return true;
    }
    if (max > 0 && buffer_.size() - pos_ > max) {
      if (auto s = SkipLongLine(static_cast<int64_t>(buffer_.size() - pos_)); !s.ok()) return s;
    }
    if (eof_) {
      if (pos_ >= buffer_.size()) return false;
      size_t end = buffer_.size();
      if (end > pos_ && buffer_[end - 1] == '\r') --end;
      *line = std::string_view(buffer_.data() + pos_, end - pos_);
      pos_ = buffer_.size();
      ++line_number_;
      return true;
    }
    // Drop consumed bytes before growing the buffer (the returned view is no longer needed).
    if (pos_ > 0) {
      buffer_.erase(0, pos_);
      pos_ = 0;
    }
    scan = buffer_.size();
    if (auto s = Fill(); !s.ok()) return s;
  }
}

}  // namespace openmoe
