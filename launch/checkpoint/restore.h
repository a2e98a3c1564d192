// Restoring a trainer from a checkpoint, for any topology, world size, expert and model
// parallelism.
//
// Rank 0 reads and checks the manifest (its checksum, its tensor index, the model's dimensions
// against this job) and broadcasts it; then every rank reads the pieces its layout holds: shared
// tensors by name, expert tensors (parameters and Adafactor state) by global expert id, model
// pieces as their box of the whole tensor. Every file read is checked against its checksum; the
// ranks agree on the outcome. Data-iterator states are restored when the checkpoint was written
// for the same number of data shards (chips / model_parallel; they are keyed by global shard id);
// otherwise the run continues without them, with a warning.
//
// Both functions are collective over trainer.world(). On failure the trainer's parameters and
// optimizer state may be partly overwritten (callers fail or load another checkpoint).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launch/trainer.h"

namespace openmoe {

struct RestoreOutcome {
  bool restored = false;
  std::string dir;   // the checkpoint loaded
  int64_t step = 0;  // the step training continues at
  // One line each (skipped checkpoints, data states not restored); rank 0 prints them.
  std::vector<std::string> warnings;
};

// Loads checkpoint directory `dir`. Errors name the checkpoint and the file, tensor or field.
absl::StatusOr<RestoreOutcome> RestoreCheckpoint(Trainer& trainer, const std::string& dir);

// Where training starts, per checkpoint.resume:
//   "never": nothing is loaded;
//   "auto": the newest checkpoint under `root` (checkpoint.dir) that loads; each one that does not
//     (incomplete, corrupted, written by another model, holding a NaN or infinity) is skipped with a warning naming it. No
//     checkpoint at all: a fresh start. Checkpoints, but none usable: an error listing why (so a
//     run never silently starts over next to its damaged checkpoints);
//   anything else: that checkpoint directory, or an error.
absl::StatusOr<RestoreOutcome> ResumeTraining(Trainer& trainer, const std::string& resume,
                                              const std::string& root);

}  // namespace openmoe
