// Saving a checkpoint: collective, atomic, each rank writing what it owns.
//
//   <root>/step_<N>.tmp/   while the save runs (left over only by a crash; removed by the next save)
//   <root>/step_<N>/       once complete: manifest.pbtxt + one .zst file per tensor piece
//
// Who writes what: shared tensors (parameters and their Adafactor state) by world rank 0; each
// range of experts by the lowest world rank of the replica set holding it
// (Trainer::replicas().rank() == 0). Every file is fsync'd. Rank 0 then gathers every rank's
// entries and data-iterator states, writes the manifest last (fsync'd), fsyncs the directory,
// renames it to its final name and fsyncs `root`. Only then are older checkpoints pruned, so that
// `keep_last` remain: checkpoints of a lower step than this one, newest first; a checkpoint of a
// higher step (another run's) is never touched. A failed save (any rank's write, the manifest, the
// rename) removes its temporary directory and leaves every existing checkpoint as it was.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launch/trainer.h"

namespace openmoe {

struct SaveStats {
  std::string path;              // the checkpoint directory written
  int64_t step = 0;
  int64_t files = 0;             // tensor files, all ranks
  int64_t raw_bytes = 0;         // uncompressed tensor bytes, all ranks
  int64_t compressed_bytes = 0;  // tensor file bytes, all ranks
  double seconds = 0;            // wall time of the save on this rank
  std::vector<std::string> pruned;  // older checkpoints removed (every rank gets the list)
};

// Collective over trainer.world(): saves the trainer's parameters, optimizer state, step and data
// iterator states as `<root>/step_<trainer.step()>` (replacing a checkpoint of that step once the
// new one is complete), then prunes to `keep_last`. Every rank returns the same status: the first
// failing rank's error, naming the file.
absl::StatusOr<SaveStats> SaveCheckpoint(Trainer& trainer, const std::string& root, int64_t keep_last);

}  // namespace openmoe
