#include "launch/checkpoint/restore.h"

#include <algorithm>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/check.h"
#include "launch/checkpoint/manifest.h"
#include "launch/checkpoint/reader.h"
#include "parallel/collective_status.h"

namespace openmoe {
namespace {

// Rank 0: the manifest of `dir`, checked on its own and against this job's model.
absl::StatusOr<CheckpointManifest> ReadCheckedManifest(const std::string& dir, const JobSpec& job) {
  absl::StatusOr<CheckpointReader> reader = CheckpointReader::Open(dir);
  if (!reader.ok()) return reader.status();
  const absl::Status compatible = CheckModelCompatible(reader->manifest().job(), job);
  if (!compatible.ok()) {
    return absl::Status(compatible.code(),
                        absl::StrCat("checkpoint ", dir, ": ", compatible.message()));
  }
  return reader->manifest();
}

// The data states of this rank's data shards, or none (with a warning) when the checkpoint was
// written for another number of shards (chips / model_parallel). States are keyed by global shard
// id (DataIteratorState.chip: a shard is a chip without a model axis, so older checkpoints read
// the same way).
absl::StatusOr<std::vector<std::string>> LocalDataStates(const Trainer& trainer,
                                                         const CheckpointManifest& m,
                                                         const std::string& dir,
                                                         std::vector<std::string>* warnings) {
  const Mesh& mesh = trainer.mesh();
  const int64_t written_mp = std::max<int64_t>(1, m.job().mesh().model_parallel());
  const int64_t written_shards = m.num_chips() / written_mp;
  if (written_shards != mesh.NumShards()) {
    warnings->push_back(absl::StrFormat(
        "checkpoint %s was written on %d chips with mesh.model_parallel=%d (%d data shards), this "
        "job has %d chips with %d (%d data shards): data-iterator states are not restored (they "
        "are per data shard); generated data is positioned at step %d, corpus data starts afresh",
        dir, m.num_chips(), written_mp, written_shards, mesh.num_chips, mesh.model_parallel,
        mesh.NumShards(), m.step()));
    return std::vector<std::string>();
  }
  std::map<int64_t, const std::string*> by_shard;
  for (const DataIteratorState& d : m.data_states()) by_shard[d.chip()] = &d.state();
  std::vector<std::string> states;
  for (int64_t s = mesh.FirstShard(); s < mesh.FirstShard() + mesh.ShardsPerRank(); ++s) {
    auto it = by_shard.find(s);
    if (it == by_shard.end()) {
      return absl::DataLossError(
          absl::StrCat("checkpoint ", dir, ": no data-iterator state for data shard ", s));
    }
    states.push_back(*it->second);
  }
  return states;
}

}  // namespace

absl::StatusOr<RestoreOutcome> RestoreCheckpoint(Trainer& trainer, const std::string& dir) {
  Communicator& world = trainer.world();
  std::string bytes;
  absl::Status read = absl::OkStatus();
  if (world.rank() == 0) {
    absl::StatusOr<CheckpointManifest> manifest = ReadCheckedManifest(dir, trainer.spec());
    if (manifest.ok()) {
      bytes = manifest->SerializeAsString();
    } else {
      read = manifest.status();
    }
  }
  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(world, read));
  world.Broadcast(&bytes, 0);
  CheckpointManifest manifest;
  OPENMOE_CHECK(manifest.ParseFromString(bytes));
  const CheckpointReader reader(dir, std::move(manifest));

  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(
      world, reader.LoadInto(trainer.layout(), trainer.params().data(), &trainer.optimizer())));

  // Trainer state outside the model (Trainer::CheckpointExtras): read when the checkpoint holds
  // it; a checkpoint without it (written before the option was set) starts it at zero.
  std::vector<std::string> extra_warnings;
  absl::Status extras = absl::OkStatus();
  for (const CheckpointExtra& x : trainer.CheckpointExtras()) {
    const absl::StatusOr<bool> held = reader.ReadExtra(x.name, x.shape, x.data);
    extras = held.status();
    if (!extras.ok()) break;
    if (!*held) {
      int64_t n = 1;
      for (int64_t d : x.shape) n *= d;
      std::fill_n(x.data, n, 0.0f);
      extra_warnings.push_back(
          absl::StrCat("checkpoint ", dir, " holds no ", x.name, ": it starts at zero"));
    }
  }
  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(world, extras));
  trainer.ExtrasRestored();

  // A NaN or infinity (written by an older version, or by hand) would only fail the run again.
  const absl::Status finite = trainer.CheckParamsFinite();
  if (!finite.ok()) {
    return absl::DataLossError(absl::StrCat("checkpoint ", dir, ": ", finite.message()));
  }

  RestoreOutcome outcome;
  outcome.restored = true;
  outcome.dir = dir;
  outcome.step = reader.manifest().step();
  outcome.warnings = extra_warnings;
  absl::StatusOr<std::vector<std::string>> states =
      LocalDataStates(trainer, reader.manifest(), dir, &outcome.warnings);
  absl::Status progress = states.status();
  if (states.ok()) progress = trainer.RestoreProgress(outcome.step, *states).status();
  if (!progress.ok()) {
    progress =
        absl::Status(progress.code(), absl::StrCat("checkpoint ", dir, ": ", progress.message()));
  }
  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(world, progress));
  return outcome;
}

absl::StatusOr<RestoreOutcome> ResumeTraining(Trainer& trainer, const std::string& resume,
                                              const std::string& root) {
  if (resume == "never") return RestoreOutcome{};
  if (resume != "auto") return RestoreCheckpoint(trainer, resume);
  if (root.empty()) return RestoreOutcome{};

  // Rank 0 lists the candidates, so that every rank tries the same ones.
  Communicator& world = trainer.world();
  std::string listing;
  absl::Status listed = absl::OkStatus();
  if (world.rank() == 0) {
    absl::StatusOr<std::vector<CheckpointDir>> dirs = ListCheckpoints(root);
    if (dirs.ok()) {
      for (const CheckpointDir& d : *dirs) absl::StrAppend(&listing, d.path, "\n");
    } else {
      listed = dirs.status();
    }
  }
  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(world, listed));
  world.Broadcast(&listing, 0);
  const std::vector<std::string> candidates = absl::StrSplit(listing, '\n', absl::SkipEmpty());

  std::vector<std::string> skipped;
  for (const std::string& dir : candidates) {
    absl::StatusOr<RestoreOutcome> outcome = RestoreCheckpoint(trainer, dir);
    if (outcome.ok()) {
      outcome->warnings.insert(outcome->warnings.begin(), skipped.begin(), skipped.end());
      return outcome;
    }
    absl::string_view why = outcome.status().message();
    absl::ConsumePrefix(&why, absl::StrCat("checkpoint ", dir, ": "));
    skipped.push_back(absl::StrCat("skipping checkpoint ", dir, ": ", why));
  }
  if (candidates.empty()) return RestoreOutcome{};
  return absl::FailedPreconditionError(absl::StrCat(
      "checkpoint.dir=", root, " holds checkpoints but none loads (", absl::StrJoin(skipped, "; "),
      "); repair or move them, or start fresh with --resume never"));
}

}  // namespace openmoe
