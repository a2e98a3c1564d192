// Checkpoint tensor files: one zstd frame per file, 64-bit checksums of the file and of the raw
// bytes, and the filesystem steps of an atomic save (fsync of files and directories).
//
// Not collective: every function works on this process's files only; different files may be
// written or read from different threads at once. Errors name the file and are
// absl::Status: DataLoss for a corrupted or truncated file, NotFound for a missing one, and
// ResourceExhausted / PermissionDenied / Internal (from errno) for a failed write.
//
// Checksums are XXH64 with seed 0 (core/io/checksum.h): one of the file as written (`xxhsum -H64
// FILE` prints it), one of the raw little-endian float32 bytes before shuffling and compression
// (what the tensor holds, whatever the encoding).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/io/checksum.h"  // Xxh64, Xxh64Stream
#include "core/io/file.h"      // SyncFile, FsyncDirectory
#include "proto/checkpoint.pb.h"

namespace openmoe {

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
// waiting for it: call SyncFile (core/io/file.h) before relying on it. The caller also syncs the directory.
absl::StatusOr<TensorFileInfo> WriteTensorFile(const std::string& path, const float* data,
                                               int64_t count,
                                               TensorEncoding encoding = ENCODING_SHUFFLE4_ZSTD);

// Reads the file `path` described by `entry` (encoding, sizes, checksums) into `out`
// (entry.raw_bytes / 4 floats), streaming, checking the file's size and checksum, the
// decompressed size and the raw bytes' checksum. DataLoss naming the file on any mismatch; `out`
// is unspecified after an error.
absl::Status ReadTensorFile(const std::string& path, const TensorEntry& entry, float* out);

// WriteFileSynced (core/io/file.h) through the fault hook below (used for the manifest).
absl::Status WriteCheckpointFileSynced(const std::string& path, std::string_view bytes);

// Fault injection for tests: called before every file WriteTensorFile or WriteCheckpointFileSynced
// writes; when it returns an error, only part of the file is written (as a full disk would leave
// it) and that error is returned, naming the path. Null (the default) disables it. Set it before a save
// starts (it is called from the save's worker threads).
using WriteFaultHook = std::function<absl::Status(const std::string& path)>;
void SetWriteFaultHookForTesting(WriteFaultHook hook);

}  // namespace openmoe
