// The checkpoint directory and its manifest: naming, listing, the manifest file, and the checks
// that decide whether a checkpoint fits a job.
//
// A checkpoint lives in `<checkpoint.dir>/step_<step, 8 digits>`; a save in progress (or one that
// failed) is `step_<N>.tmp` and never counts. `manifest.pbtxt` is the CheckpointManifest in text
// format followed by one line `# xxh64 <16 hex digits>`: the XXH64 of every byte before that line.
// A manifest whose line is missing or does not match is corrupted.
//
// Not collective: single-process helpers (rank 0 calls them during a save or restore).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/checkpoint.pb.h"
#include "proto/job.pb.h"

namespace openmoe {

inline constexpr char kManifestFile[] = "manifest.pbtxt";
inline constexpr int kCheckpointFormatVersion = 1;

// "step_00000042" (more digits past 99,999,999).
std::string StepDirName(int64_t step);
// The step of a final checkpoint directory name ("step_" and 8 or more digits), else nullopt.
std::optional<int64_t> ParseStepDirName(std::string_view name);

struct CheckpointDir {
  int64_t step = 0;
  std::string path;
};
// Final-named checkpoint directories under `root`, newest (highest step) first; empty when `root`
// does not exist. Says nothing about their validity.
absl::StatusOr<std::vector<CheckpointDir>> ListCheckpoints(const std::string& root);

// The manifest's file text (text format plus the checksum line).
std::string SerializeManifest(const CheckpointManifest& manifest);
// Parses and checks file text; `path` names the file in errors (DataLoss for a checksum mismatch
// or a missing checksum line, InvalidArgument for a parse error or an unknown format version).
absl::StatusOr<CheckpointManifest> ParseManifest(std::string_view text, const std::string& path);
// Reads `<checkpoint_dir>/manifest.pbtxt`: NotFound (an incomplete checkpoint) when absent.
absl::StatusOr<CheckpointManifest> ReadManifest(const std::string& checkpoint_dir);

// Whether a checkpoint written by `saved` can load into `job`: the model's dimensions must agree
// (topology, mesh, optimizer hyperparameters and data may differ). FailedPrecondition naming the
// first differing field: "model.d_model=64 in the checkpoint, 32 in this job".
absl::Status CheckModelCompatible(const JobSpec& saved, const JobSpec& job);

// Checks the manifest's tensor index on its own: known dtype and kind, sizes consistent with the
// shapes, expert ranges inside [0, num_experts), and for every expert tensor ranges that cover
// every expert exactly once. InvalidArgument naming the tensor.
absl::Status CheckTensorIndex(const CheckpointManifest& manifest);

}  // namespace openmoe
