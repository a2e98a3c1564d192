// Checkpoint tensor files: one zstd frame per file, 64-bit checksums of the file and of the raw
// bytes, and the filesystem steps of an atomic save (fsync of files and directories).
//
// Not collective: every function works on this process's files only; different files may be
// written or read from different threads at once. Errors name the file and are
// absl::Status: DataLoss for a corrupted or truncated file, NotFound for a missing one, and
// ResourceExhausted / PermissionDenied / Internal (from errno) for a failed write.
//
// Checksums are XXH64 with seed 0 (https://github.com/Cyan4973/xxHash, doc/xxhash_spec.md): one of
// the file as written (`xxhsum -H64 FILE` prints it), one of the raw little-endian float32 bytes
// before shuffling and compression (what the tensor holds, whatever the encoding).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/checkpoint.pb.h"

namespace openmoe {

// XXH64 of `n` bytes at `data`.
uint64_t Xxh64(const void* data, size_t n, uint64_t seed = 0);

// XXH64 over bytes fed in pieces: Digest() equals Xxh64 of their concatenation.
class Xxh64Stream {
 public:
  explicit Xxh64Stream(uint64_t seed = 0);
  void Update(const void* data, size_t n);
  uint64_t Digest() const;

 private:
  uint64_t seed_, v_[4];
  uint64_t total_ = 0;
  unsigned char buffer_[32];
  size_t buffered_ = 0;
};

// What WriteTensorFile wrote (the fields a TensorEntry records about its file).
struct TensorFileInfo {
  TensorEncoding encoding = ENCODING_ZSTD;
  int64_t raw_bytes = 0;
  int64_t compressed_bytes = 0;
  uint64_t checksum = 0;       // XXH64 of the raw bytes
  uint64_t file_checksum = 0;  // XXH64 of the file
};

// zstd level for tensor files: float data gains little from higher levels (see the bench).
inline constexpr int kTensorZstdLevel = 1;
// ENCODING_SHUFFLE4_ZSTD shuffles blocks of this many floats (1 MiB) on their own, so that writer
// and reader stream with bounded memory.
inline constexpr int64_t kShuffleBlockFloats = int64_t{1} << 18;

// Compresses `count` floats into the new file `path` (an existing file is replaced) as one zstd
// frame, streaming (memory: about two shuffle blocks), and starts the file's writeback without
// waiting for it: call SyncFile before relying on it. The caller also syncs the directory.
absl::StatusOr<TensorFileInfo> WriteTensorFile(const std::string& path, const float* data,
                                               int64_t count,
                                               TensorEncoding encoding = ENCODING_SHUFFLE4_ZSTD);

// fsync of a file written earlier (by any process).
absl::Status SyncFile(const std::string& path);

// Reads the file `path` described by `entry` (encoding, sizes, checksums) into `out`
// (entry.raw_bytes / 4 floats), streaming, checking the file's size and checksum, the
// decompressed size and the raw bytes' checksum. DataLoss naming the file on any mismatch; `out`
// is unspecified after an error.
absl::Status ReadTensorFile(const std::string& path, const TensorEntry& entry, float* out);

// Writes `bytes` to the new file `path` and fsyncs it (used for the manifest).
absl::Status WriteFileSynced(const std::string& path, std::string_view bytes);

// fsync of a directory, so that the names created, renamed or removed in it are durable.
absl::Status FsyncDirectory(const std::string& dir);

// Fault injection for tests: called before every file WriteTensorFile or WriteFileSynced writes;
// when it returns an error, only part of the file is written (as a full disk would leave it) and
// that error is returned, naming the path. Null (the default) disables it. Set it before a save
// starts (it is called from the save's worker threads).
using WriteFaultHook = std::function<absl::Status(const std::string& path)>;
void SetWriteFaultHookForTesting(WriteFaultHook hook);

}  // namespace openmoe
