// Small filesystem helpers for the data pipeline. Errors name the path.
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
bool IsDirectory(const std::string& path);
bool PathExists(const std::string& path);
absl::Status MakeDirectories(const std::string& path);
// Regular files under `dir` (recursively, symlinks to files included, symlinked directories not
// followed), as full paths sorted bytewise: the same order on every machine.
absl::StatusOr<std::vector<std::string>> ListFilesRecursive(const std::string& dir);
// "a/b" + "c" -> "a/b/c".
std::string JoinPath(std::string_view dir, std::string_view name);

}  // namespace openmoe
