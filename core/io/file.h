// Files: whole-file reads, durable writes (fsync of files and directories), and small path
// helpers, for the data pipeline and checkpoints alike.
//
// Not collective; safe from several threads on different files. Errors name the path and, where
// a system call failed, carry strerror; codes from errno by ErrnoStatus (ResourceExhausted for a
// full disk or quota, PermissionDenied, NotFound, else Internal). ReadFile: NotFound for a missing
// file, "<path>: cannot open: <strerror>".
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace openmoe {

absl::StatusOr<std::string> ReadFile(const std::string& path);
// Writes to `path.tmp<pid>`, fsyncs, renames over `path`: readers never see a partial file.
absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes);
// Creates `path` (replacing a file of that name), writes `bytes`, fsyncs and closes it. Not
// atomic: a crash may leave part of it (callers rename or check it).
absl::Status WriteFileSynced(const std::string& path, std::string_view bytes);
// fsync of a file written earlier (by any process).
absl::Status SyncFile(const std::string& path);
// fsync of a directory, so that the names created, renamed or removed in it are durable.
absl::Status FsyncDirectory(const std::string& dir);
// Writes all of `bytes` to `fd` (retrying short writes and EINTR); errors name `path`.
absl::Status WriteAllToFd(int fd, std::string_view bytes, const std::string& path);
// "<what> (<strerror(err)>)" with the code errno `err` maps to (see the top of this file).
absl::Status ErrnoStatus(int err, const std::string& what);
bool IsDirectory(const std::string& path);
bool PathExists(const std::string& path);
absl::Status MakeDirectories(const std::string& path);
// Regular files under `dir` (recursively, symlinks to files included, symlinked directories not
// followed), as full paths sorted bytewise: the same order on every machine.
absl::StatusOr<std::vector<std::string>> ListFilesRecursive(const std::string& dir);
// "a/b" + "c" -> "a/b/c".
std::string JoinPath(std::string_view dir, std::string_view name);

}  // namespace openmoe
