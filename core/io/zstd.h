// zstd, the project's one compression: whole-buffer compression and decompression (token
// shards, fixtures), a streaming compressor and decompressor (checkpoint tensor files, jsonl.zst
// through LineReader), and a streaming .zst file writer (corpora).
//
// Not thread-safe per object; separate objects may be used from separate threads. Errors are
// absl::Status naming the file where there is one; corrupt or truncated input is DataLoss.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
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

// Streaming compression into one zstd frame; the compressed bytes go to `sink` in chunks (at most
// ZSTD_CStreamOutSize() each) as they are produced. A sink error is returned as it is and ends the
// stream (the object must not be used afterwards).
class ZstdCompressor {
 public:
  using Sink = std::function<absl::Status(std::string_view compressed)>;
  struct Options {
    std::string name;  // the file, for errors: "<name>: zstd compression failed (...)"
    int level = 3;
    bool frame_checksum = false;  // zstd's own 32-bit content checksum in the frame
    int64_t pledged_size = -1;    // the exact total input size when known (written in the frame)
  };
  ZstdCompressor(const Options& options, Sink sink);
  ~ZstdCompressor();
  ZstdCompressor(const ZstdCompressor&) = delete;
  ZstdCompressor& operator=(const ZstdCompressor&) = delete;
  // Compresses `bytes` (zstd may hold some until later calls).
  absl::Status Write(std::string_view bytes);
  // Flushes everything and ends the frame.
  absl::Status End();

 private:
  absl::Status Run(std::string_view bytes, bool end);
  void* cctx_;
  std::string name_;
  Sink sink_;
  std::string out_;
};

// Streaming decompression of one or more concatenated frames, one decoder step at a time.
class ZstdDecompressor {
 public:
  ZstdDecompressor();
  ~ZstdDecompressor();
  ZstdDecompressor(const ZstdDecompressor&) = delete;
  ZstdDecompressor& operator=(const ZstdDecompressor&) = delete;
  // Decodes from the front of `*in` into out[0, out_size) and removes the input it consumed from
  // *in; returns the bytes written. Corrupt data: DataLoss whose message is zstd's (the caller
  // says where), with *in unchanged, so the end of what was handed over bounds the damage.
  absl::StatusOr<size_t> Decode(std::string_view* in, char* out, size_t out_size);
  // After a successful Decode: 0 when the input so far ends exactly at the end of a frame, else
  // nonzero (a frame is open or output is still held). 1 before the first Decode.
  size_t frame_left() const { return frame_left_; }
  // Sizes that make one Decode efficient (zstd's recommendations).
  static size_t InputChunkSize();
  static size_t OutputChunkSize();

 private:
  void* dctx_;
  size_t frame_left_ = 1;
};

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
  absl::Status Compress(bool end);  // pending_ into the compressor; `end`: the frame too
  std::string path_, tmp_;
  std::FILE* file_ = nullptr;
  std::unique_ptr<ZstdCompressor> compressor_;
  std::string pending_;
};

}  // namespace openmoe
