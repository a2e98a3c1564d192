// BatchSource: the rows one data shard trains on, with resumable state. This is what the trainer
// reads.
//
// Shards are disjoint parts of the source stream; the number of shards is the number of chips
// (topology.num_chips), so the global batch does not depend on how chips map to MPI ranks. A rank
// hosting several chips holds one BatchSource per chip; chip c is shard c. Each step, each shard
// is asked for rows_per_chip = batch_rows / num_chips rows.
//
// DATA_SYNTHETIC_MARKOV: shard k's call for r rows, when the shards have so far been asked for
// G global rows in all (G = step * batch_rows), returns global rows G + k r .. G + (k+1) r - 1 of
// the Markov stream, so concatenating every shard's rows of a step in shard order gives the rows
// the whole batch would have. The state is G. (Every call of a step must ask for the same r.)
//
// DATA_CORPUS: the mixture of data.sources, each read by this shard only at records
// congruent to shard mod num_shards, made into examples by data.objective and packed into rows
// (see packer.h). Rows depend only on (job data config, seq_len, shard, num_shards) and the
// number of rows already taken, never on timing or thread count.
//
// Not thread-safe: one thread uses one BatchSource (different sources are independent).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/batch.h"
#include "proto/job.pb.h"

namespace openmoe {

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // The next `rows` rows of this shard (rows x seq_len), tokens/targets/loss_weights/segment_ids
  // filled. seq_len must be train.seq_len of the job the source was made for.
  virtual absl::Status Next(int64_t rows, int64_t seq_len, Batch* out) = 0;
  // Opaque iterator state (for checkpoints): restoring it makes Next() continue exactly where it
  // was. State saved for another shard, shard count or data config is refused (FailedPrecondition).
  virtual std::string SaveState() const = 0;
  virtual absl::Status RestoreState(const std::string& state) = 0;
  // Positions the iterator at the start of step `step` (every step takes batch_rows global rows)
  // without a saved state, where the source can (the generated stream is addressed by global
  // row); returns false where it cannot (corpora: their position depends on the shard count).
  virtual bool SeekToStep(int64_t step, int64_t batch_rows) { return false; }
  // Counters for metrics (bad records skipped, documents read, ...), name -> value, counted since
  // this object was made. Names: "data.<source>.<counter>" and "data.<counter>".
  virtual std::vector<std::pair<std::string, int64_t>> Counters() const { return {}; }
};

// Shard `shard` of `num_shards` (0 <= shard < num_shards). Opens and checks every file, the
// tokenizer and the objective up front: errors are one line naming the file or field at fault.
absl::StatusOr<std::unique_ptr<BatchSource>> MakeBatchSource(const JobSpec& spec, int64_t shard,
                                                             int64_t num_shards);

// The data section's own checks (no file access): sources, weights, tokenizer fields, UL2 rates.
// Returns each problem as one "field=value problem" string (empty when valid); ValidateJob can
// fold them into its message.
std::vector<std::string> DataConfigProblems(const JobSpec& spec);

}  // namespace openmoe
