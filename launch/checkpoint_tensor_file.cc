#include "launch/checkpoint_tensor_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/check.h"

namespace openmoe {
namespace {

WriteFaultHook& FaultHook() {
  static WriteFaultHook hook;
  return hook;
}

// --- XXH64 (xxhash_spec.md) ---
constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ull;

inline uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t Read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);  // little-endian machines only (x86-64, aarch64)
  return v;
}
inline uint32_t Read32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t Round(uint64_t acc, uint64_t input) {
  acc += input * kP2;
  acc = Rotl(acc, 31);
  return acc * kP1;
}
inline uint64_t MergeRound(uint64_t acc, uint64_t val) {
  acc ^= Round(0, val);
  return acc * kP1 + kP4;
}

// The last (< 32) bytes and the avalanche.
uint64_t Finish(uint64_t h, const unsigned char* p, size_t n) {
  const unsigned char* end = p + n;
  for (; p + 8 <= end; p += 8) h = Rotl(h ^ Round(0, Read64(p)), 27) * kP1 + kP4;
  if (p + 4 <= end) {
    h = Rotl(h ^ (static_cast<uint64_t>(Read32(p)) * kP1), 23) * kP2 + kP3;
    p += 4;
  }
  for (; p < end; ++p) h = Rotl(h ^ (*p * kP5), 11) * kP1;
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

absl::Status ErrnoStatus(int err, const std::string& what) {
  const std::string message = absl::StrCat(what, " (", std::strerror(err), ")");
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(message);
  if (err == EACCES || err == EPERM || err == EROFS) return absl::PermissionDeniedError(message);
  if (err == ENOENT) return absl::NotFoundError(message);
  return absl::InternalError(message);
}

// Writes all of `bytes` to fd; on failure the errno status naming `path`.
absl::Status WriteAll(int fd, const char* bytes, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, bytes, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat(path, ": write failed"));
    }
    bytes += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

// Creates `path` (replacing a file of that name), writes, fsyncs and closes it.
absl::Status WriteSynced(const std::string& path, const char* bytes, size_t n) {
  absl::Status injected = absl::OkStatus();
  if (FaultHook()) injected = FaultHook()(path);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat(path, ": cannot create"));
  absl::Status status = WriteAll(fd, bytes, injected.ok() ? n : n / 2, path);
  if (status.ok() && !injected.ok()) {
    status = absl::Status(injected.code(),
                          absl::StrCat(path, ": write failed (", injected.message(), ")"));
  }
  if (status.ok() && ::fsync(fd) != 0)
    status = ErrnoStatus(errno, absl::StrCat(path, ": fsync failed"));
  if (::close(fd) != 0 && status.ok())
    status = ErrnoStatus(errno, absl::StrCat(path, ": close failed"));
  return status;
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

using CCtx = std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)>;
using DCtx = std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)>;

}  // namespace

uint64_t Xxh64(const void* data, size_t n, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* end = p + n;
  uint64_t h;
  if (n >= 32) {
    uint64_t v1 = seed + kP1 + kP2, v2 = seed + kP2, v3 = seed, v4 = seed - kP1;
    const unsigned char* limit = end - 32;
    do {
      v1 = Round(v1, Read64(p));
      v2 = Round(v2, Read64(p + 8));
      v3 = Round(v3, Read64(p + 16));
      v4 = Round(v4, Read64(p + 24));
      p += 32;
    } while (p <= limit);
    h = Rotl(v1, 1) + Rotl(v2, 7) + Rotl(v3, 12) + Rotl(v4, 18);
    h = MergeRound(h, v1);
    h = MergeRound(h, v2);
    h = MergeRound(h, v3);
    h = MergeRound(h, v4);
  } else {
    h = seed + kP5;
  }
  return Finish(h + static_cast<uint64_t>(n), p, static_cast<size_t>(end - p));
}

Xxh64Stream::Xxh64Stream(uint64_t seed)
    : seed_(seed), v_{seed + kP1 + kP2, seed + kP2, seed, seed - kP1} {}

void Xxh64Stream::Update(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  total_ += n;
  if (buffered_ + n < 32) {
    if (n > 0) std::memcpy(buffer_ + buffered_, p, n);
    buffered_ += n;
    return;
  }
  if (buffered_ > 0) {
    const size_t take = 32 - buffered_;
    std::memcpy(buffer_ + buffered_, p, take);
    for (int i = 0; i < 4; ++i) v_[i] = Round(v_[i], Read64(buffer_ + 8 * i));
    p += take;
    n -= take;
    buffered_ = 0;
  }
  for (; n >= 32; p += 32, n -= 32) {
    v_[0] = Round(v_[0], Read64(p));
    v_[1] = Round(v_[1], Read64(p + 8));
    v_[2] = Round(v_[2], Read64(p + 16));
    v_[3] = Round(v_[3], Read64(p + 24));
  }
  if (n > 0) std::memcpy(buffer_, p, n);
  buffered_ = n;
}

uint64_t Xxh64Stream::Digest() const {
  uint64_t h;
  if (total_ >= 32) {
    h = Rotl(v_[0], 1) + Rotl(v_[1], 7) + Rotl(v_[2], 12) + Rotl(v_[3], 18);
    for (int i = 0; i < 4; ++i) h = MergeRound(h, v_[i]);
  } else {
    h = seed_ + kP5;
  }
  return Finish(h + total_, buffer_, buffered_);
}

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
  CCtx cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, kTensorZstdLevel);
  ZSTD_CCtx_setPledgedSrcSize(cctx.get(), static_cast<unsigned long long>(info.raw_bytes));
  const bool shuffle = encoding == ENCODING_SHUFFLE4_ZSTD;
  const int64_t block_floats = std::min(kShuffleBlockFloats, count);
  std::unique_ptr<unsigned char[]> block(shuffle ? new unsigned char[4 * block_floats] : nullptr);
  std::unique_ptr<char[]> out_buffer(new char[ZSTD_CStreamOutSize()]);
  Xxh64Stream file_hash;

  int64_t done = 0;  // floats consumed
  do {
    const int64_t n = std::min(kShuffleBlockFloats, count - done);
    const bool last = done + n == count;
    const unsigned char* src = raw + 4 * done;
    if (shuffle && n > 0) {
      Shuffle4(src, n, block.get());
      src = block.get();
    }
    ZSTD_inBuffer in{src, static_cast<size_t>(4 * n), 0};
    size_t remaining = 1;
    while (in.pos < in.size || (last && remaining != 0)) {
      ZSTD_outBuffer out{out_buffer.get(), ZSTD_CStreamOutSize(), 0};
      remaining = ZSTD_compressStream2(cctx.get(), &out, &in, last ? ZSTD_e_end : ZSTD_e_continue);
      if (ZSTD_isError(remaining)) {
        return absl::InternalError(
            absl::StrCat(path, ": zstd compression failed (", ZSTD_getErrorName(remaining), ")"));
      }
      OPENMOE_RETURN_IF_ERROR(WriteAll(file.fd, out_buffer.get(), out.pos, path));
      file_hash.Update(out_buffer.get(), out.pos);
      info.compressed_bytes += static_cast<int64_t>(out.pos);
      if (!injected.ok() && info.compressed_bytes > 0) {
        return absl::Status(injected.code(),
                            absl::StrCat(path, ": write failed (", injected.message(), ")"));
      }
    }
    done += n;
  } while (done < count);
  info.file_checksum = file_hash.Digest();
  // Start writing back now; SyncFile waits for it later, so files are written back in parallel.
  ::sync_file_range(file.fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  const int fd = file.fd;
  file.fd = -1;
  if (::close(fd) != 0) return ErrnoStatus(errno, absl::StrCat(path, ": close failed"));
  return info;
}

absl::Status SyncFile(const std::string& path) {
  FdCloser file{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (file.fd < 0) return ErrnoStatus(errno, absl::StrCat(path, ": cannot open to sync it"));
  if (::fsync(file.fd) != 0) return ErrnoStatus(errno, absl::StrCat(path, ": fsync failed"));
  return absl::OkStatus();
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
  const size_t chunk = ZSTD_DStreamInSize();
  std::unique_ptr<char[]> in_buffer(new char[chunk]);
  DCtx dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  Xxh64Stream file_hash;
  ZSTD_inBuffer in{in_buffer.get(), 0, 0};
  int64_t file_read = 0;
  size_t frame_left = 1;  // ZSTD_decompressStream's hint; 0 once the frame is complete
  auto corrupt = [&](const std::string& what) {
    return absl::DataLossError(
        absl::StrCat(path, ": ", what, " (at compressed byte ", file_read, ")"));
  };
  // Decodes exactly `bytes` bytes into dst.
  auto decode = [&](unsigned char* dst, size_t bytes) -> absl::Status {
    ZSTD_outBuffer o{dst, bytes, 0};
    while (o.pos < o.size) {
      if (in.pos == in.size) {
        ssize_t r;
        do {
          r = ::read(file.fd, in_buffer.get(), chunk);
        } while (r < 0 && errno == EINTR);
        if (r < 0) return ErrnoStatus(errno, absl::StrCat(path, ": read failed"));
        if (r == 0) return corrupt("the data ends early");
        file_hash.Update(in_buffer.get(), static_cast<size_t>(r));
        file_read += r;
        in = {in_buffer.get(), static_cast<size_t>(r), 0};
      }
      if (frame_left == 0) return corrupt("decompresses to fewer bytes than the manifest says");
      frame_left = ZSTD_decompressStream(dctx.get(), &o, &in);
      if (ZSTD_isError(frame_left))
        return corrupt(absl::StrCat("corrupt zstd data: ", ZSTD_getErrorName(frame_left)));
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
  while (frame_left != 0) {
    const absl::Status s = decode(&extra, 1);
    if (s.ok()) return corrupt("decompresses to more bytes than the manifest says");
    if (frame_left != 0) return s;
  }
  if (in.pos != in.size || file_read != size)
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

absl::Status WriteFileSynced(const std::string& path, std::string_view bytes) {
  return WriteSynced(path, bytes.data(), bytes.size());
}

absl::Status FsyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat(dir, ": cannot open directory to sync it"));
  absl::Status status = absl::OkStatus();
  if (::fsync(fd) != 0)
    status = ErrnoStatus(errno, absl::StrCat(dir, ": fsync of the directory failed"));
  ::close(fd);
  return status;
}

}  // namespace openmoe
