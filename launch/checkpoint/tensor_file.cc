#include "launch/checkpoint/tensor_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/check.h"
#include "core/io/checksum.h"
#include "core/io/file.h"
#include "core/io/zstd.h"

namespace openmoe {
namespace {

WriteFaultHook& FaultHook() {
  static WriteFaultHook hook;
  return hook;
}

// Byte shuffle of 4-byte elements: out[b * n + i] = in[4 * i + b].
void Shuffle4(const unsigned char* in, int64_t n, unsigned char* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = in[4 * i];
    out[n + i] = in[4 * i + 1];
    out[2 * n + i] = in[4 * i + 2];
    out[3 * n + i] = in[4 * i + 3];
  }
}

void Unshuffle4(const unsigned char* in, int64_t n, unsigned char* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[4 * i] = in[i];
    out[4 * i + 1] = in[n + i];
    out[4 * i + 2] = in[2 * n + i];
    out[4 * i + 3] = in[3 * n + i];
  }
}

struct FdCloser {
  int fd = -1;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};


}  // namespace

void SetWriteFaultHookForTesting(WriteFaultHook hook) { FaultHook() = std::move(hook); }

absl::StatusOr<TensorFileInfo> WriteTensorFile(const std::string& path, const float* data,
                                               int64_t count, TensorEncoding encoding) {
  TensorFileInfo info;
  info.encoding = encoding;
  info.raw_bytes = count * static_cast<int64_t>(sizeof(float));
  const auto* raw = reinterpret_cast<const unsigned char*>(data);
  info.checksum = Xxh64(raw, static_cast<size_t>(info.raw_bytes));

  const absl::Status injected = FaultHook() ? FaultHook()(path) : absl::OkStatus();
  FdCloser file{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (file.fd < 0) return ErrnoStatus(errno, absl::StrCat(path, ": cannot create"));
  const bool shuffle = encoding == ENCODING_SHUFFLE4_ZSTD;
  const int64_t block_floats = std::min(kShuffleBlockFloats, count);
  std::unique_ptr<unsigned char[]> block(shuffle ? new unsigned char[4 * block_floats] : nullptr);
  Xxh64Stream file_hash;
  ZstdCompressor compressor(
      {.name = path, .level = kTensorZstdLevel, .pledged_size = info.raw_bytes},
      [&](std::string_view compressed) -> absl::Status {
        OPENMOE_RETURN_IF_ERROR(WriteAllToFd(file.fd, compressed, path));
        file_hash.Update(compressed.data(), compressed.size());
        info.compressed_bytes += static_cast<int64_t>(compressed.size());
        if (!injected.ok()) {
          return absl::Status(injected.code(),
                              absl::StrCat(path, ": write failed (", injected.message(), ")"));
        }
        return absl::OkStatus();
      });
  for (int64_t done = 0; done < count;) {
    const int64_t n = std::min(kShuffleBlockFloats, count - done);
    const unsigned char* src = raw + 4 * done;
    if (shuffle) {
      Shuffle4(src, n, block.get());
      src = block.get();
    }
    OPENMOE_RETURN_IF_ERROR(compressor.Write(
        std::string_view(reinterpret_cast<const char*>(src), static_cast<size_t>(4 * n))));
    done += n;
  }
  OPENMOE_RETURN_IF_ERROR(compressor.End());
  info.file_checksum = file_hash.Digest();
  // Start writing back now; SyncFile waits for it later, so files are written back in parallel.
  ::sync_file_range(file.fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  const int fd = file.fd;
  file.fd = -1;
  if (::close(fd) != 0) return ErrnoStatus(errno, absl::StrCat(path, ": close failed"));
  return info;
}

absl::Status ReadTensorFile(const std::string& path, const TensorEntry& entry, float* out) {
  FdCloser file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) return ErrnoStatus(errno, absl::StrCat(path, ": cannot open"));
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) return ErrnoStatus(errno, absl::StrCat(path, ": cannot stat"));
  const int64_t size = st.st_size;
  if (size != entry.compressed_bytes()) {
    return absl::DataLossError(
        absl::StrFormat("%s: %s: %d bytes on disk, the manifest says %d", path,
                        size < entry.compressed_bytes() ? "truncated" : "wrong size", size,
                        entry.compressed_bytes()));
  }
  const int64_t raw_bytes = entry.raw_bytes();
  if (raw_bytes % 4 != 0) {
    return absl::DataLossError(
        absl::StrFormat("%s: raw size %d is not a whole number of floats", path, raw_bytes));
  }
  const int64_t count = raw_bytes / 4;
  const bool shuffle = entry.encoding() == ENCODING_SHUFFLE4_ZSTD;
  std::unique_ptr<unsigned char[]> block(
      shuffle ? new unsigned char[4 * std::min(kShuffleBlockFloats, count)] : nullptr);
  const size_t chunk = ZstdDecompressor::InputChunkSize();
  std::unique_ptr<char[]> in_buffer(new char[chunk]);
  ZstdDecompressor decoder;  // frame_left() is 0 once the frame is complete
  Xxh64Stream file_hash;
  std::string_view in;  // read from the file, not decoded yet
  int64_t file_read = 0;
  auto corrupt = [&](const std::string& what) {
    return absl::DataLossError(
        absl::StrCat(path, ": ", what, " (at compressed byte ", file_read, ")"));
  };
  // Decodes exactly `bytes` bytes into dst.
  auto decode = [&](unsigned char* dst, size_t bytes) -> absl::Status {
    size_t decoded = 0;
    while (decoded < bytes) {
      if (in.empty()) {
        ssize_t r;
        do {
          r = ::read(file.fd, in_buffer.get(), chunk);
        } while (r < 0 && errno == EINTR);
        if (r < 0) return ErrnoStatus(errno, absl::StrCat(path, ": read failed"));
        if (r == 0) return corrupt("the data ends early");
        file_hash.Update(in_buffer.get(), static_cast<size_t>(r));
        file_read += r;
        in = std::string_view(in_buffer.get(), static_cast<size_t>(r));
      }
      if (decoder.frame_left() == 0)
        return corrupt("decompresses to fewer bytes than the manifest says");
      absl::StatusOr<size_t> n =
          decoder.Decode(&in, reinterpret_cast<char*>(dst) + decoded, bytes - decoded);
      if (!n.ok()) return corrupt(absl::StrCat("corrupt zstd data: ", n.status().message()));
      decoded += *n;
    }
    return absl::OkStatus();
  };
  auto* dst = reinterpret_cast<unsigned char*>(out);
  for (int64_t done = 0; done < count;) {
    const int64_t n = std::min(kShuffleBlockFloats, count - done);
    if (shuffle) {
      OPENMOE_RETURN_IF_ERROR(decode(block.get(), static_cast<size_t>(4 * n)));
      Unshuffle4(block.get(), n, dst + 4 * done);
    } else {
      OPENMOE_RETURN_IF_ERROR(decode(dst + 4 * done, static_cast<size_t>(4 * n)));
    }
    done += n;
  }
  // The frame must end here, and the whole file be part of it.
  unsigned char extra = 0;
  while (decoder.frame_left() != 0) {
    const absl::Status s = decode(&extra, 1);
    if (s.ok()) return corrupt("decompresses to more bytes than the manifest says");
    if (decoder.frame_left() != 0) return s;
  }
  if (!in.empty() || file_read != size)
    return corrupt("data after the end of the zstd frame");
  const uint64_t file_checksum = file_hash.Digest();
  if (file_checksum != entry.file_checksum()) {
    return absl::DataLossError(
        absl::StrFormat("%s: file checksum mismatch (xxh64 %016x, the manifest says %016x): the "
                        "file was damaged or changed",
                        path, file_checksum, entry.file_checksum()));
  }
  const uint64_t checksum = Xxh64(out, static_cast<size_t>(raw_bytes));
  if (checksum != entry.checksum()) {
    return absl::DataLossError(
        absl::StrFormat("%s: checksum mismatch (xxh64 %016x, the manifest says %016x)", path,
                        checksum, entry.checksum()));
  }
  return absl::OkStatus();
}

absl::Status WriteCheckpointFileSynced(const std::string& path, std::string_view bytes) {
  const absl::Status injected = FaultHook() ? FaultHook()(path) : absl::OkStatus();
  if (injected.ok()) return WriteFileSynced(path, bytes);
  OPENMOE_RETURN_IF_ERROR(WriteFileSynced(path, bytes.substr(0, bytes.size() / 2)));
  return absl::Status(injected.code(),
                      absl::StrCat(path, ": write failed (", injected.message(), ")"));
}

}  // namespace openmoe
