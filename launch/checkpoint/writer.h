// Saving a checkpoint: collective, atomic, each rank writing what it owns.
//
//   <root>/step_<N>.tmp/   while the save runs (left over only by a crash; removed by the next
//   save) <root>/step_<N>/       once complete: manifest.pbtxt + one .zst file per tensor piece
//
// Who writes what: shared tensors (parameters and their Adafactor state) by world rank 0; each
// range of experts by the lowest world rank of the replica set holding it
// (Trainer::replicas().rank() == 0). A tensor split over the model axis is written whole, with
// its global name and shape: the model group of that writer (Trainer::model_group()) gathers its
// pieces to the group's first rank, one tensor at a time (foreground saves then write it at once,
// so that one whole tensor is held at a time; background saves keep the gathered copies), and
// that rank writes the file. Data-iterator states: one per data shard, by the first rank of each
// model group. Every file is fsync'd. Rank 0 then gathers every rank's
// entries and data-iterator states, writes the manifest last (fsync'd), fsyncs the directory,
// renames it to its final name and fsyncs `root`. Only then are older checkpoints pruned, so that
// `keep_last` remain: checkpoints of a lower step than this one, newest first; a checkpoint of a
// higher step (another run's) is never touched. A failed save (any rank's write, the manifest, the
// rename) removes its temporary directory and leaves every existing checkpoint as it was.
//
// A save can run in the background (CheckpointSave::Start(..., background = true)): the tensors
// are copied, written by a background thread while training goes on, and committed by a later
// collective Finish(). Files are compressed on CheckpointThreads() threads in the foreground and
// on one thread at the lowest CPU priority (nice 19) in the background; each file's writeback
// starts as soon as it is written, and all are fsync'd before the manifest.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launch/trainer.h"

namespace openmoe {

struct SaveStats {
  std::string path;  // the checkpoint directory written
  int64_t step = 0;
  int64_t files = 0;                // tensor files, all ranks
  int64_t raw_bytes = 0;            // uncompressed tensor bytes, all ranks
  int64_t compressed_bytes = 0;     // tensor file bytes, all ranks
  double seconds = 0;               // wall time from the start of the save to its commit, this rank
  double blocking_seconds = 0;      // of which the caller was blocked (Start + Finish), this rank
  std::vector<std::string> pruned;  // older checkpoints removed (every rank gets the list)
};

// One save in progress.
class CheckpointSave {
 public:
  // Collective over trainer.world(). Prepares `<root>/step_<trainer.step()>.tmp` (rank 0), takes
  // what this rank writes (its tensors, data-iterator states, the step) and writes the files:
  //   background = false: now, on CheckpointThreads() threads, reading the trainer's buffers;
  //   background = true: on a background thread, from a copy taken now (memory: the bytes this
  //     rank writes), so that training can go on; the trainer may change freely afterwards.
  // Finish any earlier save under `root` first (this one removes leftover `.tmp` directories).
  static absl::StatusOr<std::unique_ptr<CheckpointSave>> Start(Trainer& trainer,
                                                               const std::string& root,
                                                               int64_t keep_last, bool background);
  // Waits for the background thread, if any. A save never finished leaves its `.tmp` directory
  // (removed by the next save).
  ~CheckpointSave();

  // Whether this rank's files are written (not collective; Finish would not wait on this rank).
  bool WrittenHere() const;

  // Collective over the world: waits for this rank's files, gathers every rank's entries, and rank
  // 0 commits (manifest, rename, prune). Every rank returns the same status: the first failing
  // rank's error, naming the file. Call once.
  absl::StatusOr<SaveStats> Finish();

  int64_t step() const;

 private:
  struct State;
  explicit CheckpointSave(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Start (in the foreground) and Finish: the trainer's state as `<root>/step_<trainer.step()>`
// (replacing a checkpoint of that step once the new one is complete), then pruned to keep_last.
absl::StatusOr<SaveStats> SaveCheckpoint(Trainer& trainer, const std::string& root,
                                         int64_t keep_last);

}  // namespace openmoe
