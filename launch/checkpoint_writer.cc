#include "launch/checkpoint_writer.h"

#include <algorithm>
#include <ctime>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/check.h"
#include "core/timer.h"
#include "launch/checkpoint_collective.h"
#include "launch/checkpoint_index.h"
#include "launch/checkpoint_manifest.h"
#include "launch/checkpoint_tensor_file.h"
#include "launch/checkpoint_threads.h"

namespace openmoe {
namespace {

namespace fs = std::filesystem;

absl::Status FsError(const std::string& what, const std::error_code& ec) {
  return absl::InternalError(absl::StrCat(what, " (", ec.message(), ")"));
}

// Rank 0: creates `root` and a fresh `tmp`, removing leftovers of crashed saves.
absl::Status PrepareDirectory(const std::string& root, const std::string& tmp) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec || !fs::is_directory(root)) {
    return FsError(absl::StrCat("checkpoint.dir=", root, ": cannot create the directory"), ec);
  }
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (absl::StartsWith(name, "step_") && absl::EndsWith(name, ".tmp")) fs::remove_all(e.path(), ec);
  }
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec) || ec) return FsError(absl::StrCat(tmp, ": cannot create"), ec);
  return absl::OkStatus();
}

// This rank's files (compressed on CheckpointThreads() threads, then all fsync'd) and data
// states; an error goes into shard.error.
CheckpointShard WriteOwnShard(Trainer& trainer, const std::string& tmp) {
  CheckpointShard shard;
  shard.set_rank(trainer.world().rank());
  const bool writes_shared = trainer.world().rank() == 0;
  const bool writes_experts = trainer.replicas().rank() == 0;
  const float* params = trainer.params().data();
  const float* state = trainer.optimizer().state().data();
  std::vector<LocalTensor> mine;
  for (LocalTensor& t : LocalTensors(trainer.layout(), &trainer.optimizer())) {
    if (t.is_expert ? writes_experts : writes_shared) mine.push_back(std::move(t));
  }
  std::vector<TensorEntry> entries(mine.size());
  auto path_of = [&](int64_t i) { return (fs::path(tmp) / TensorFileName(mine[i])).string(); };
  absl::Status status = ForEachInParallel(static_cast<int64_t>(mine.size()), CheckpointThreads(), [&](int64_t i) {
    const LocalTensor& t = mine[i];
    const float* base = t.kind == TENSOR_PARAM ? params : state;
    absl::StatusOr<TensorFileInfo> info = WriteTensorFile(path_of(i), base + t.offset, t.size());
    if (!info.ok()) return info.status();
    TensorEntry& e = entries[i];
    e.set_name(t.name);
    e.set_kind(t.kind);
    for (int64_t d : t.global_shape) e.add_shape(d);
    e.set_dtype("F32");
    e.set_is_expert(t.is_expert);
    if (t.is_expert) {
      e.set_expert_begin(t.first_expert);
      e.set_expert_end(t.first_expert + t.num_experts);
    }
    e.set_factored(t.factored);
    e.set_file(TensorFileName(t));
    e.set_encoding(info->encoding);
    e.set_raw_bytes(info->raw_bytes);
    e.set_compressed_bytes(info->compressed_bytes);
    e.set_checksum(info->checksum);
    e.set_file_checksum(info->file_checksum);
    return absl::OkStatus();
  });
  // Every file was handed to writeback as it was written; now wait for all of them.
  if (status.ok()) {
    status = ForEachInParallel(static_cast<int64_t>(mine.size()), CheckpointThreads(),
                               [&](int64_t i) { return SyncFile(path_of(i)); });
  }
  if (!status.ok()) {
    shard.set_error(std::string(status.message()));
    shard.set_error_code(static_cast<int>(status.code()));
    return shard;
  }
  for (TensorEntry& e : entries) *shard.add_tensors() = std::move(e);
  const std::vector<std::string> states = trainer.DataStates();
  for (size_t i = 0; i < states.size(); ++i) {
    DataIteratorState* d = shard.add_data_states();
    d->set_chip(trainer.mesh().FirstChip() + static_cast<int64_t>(i));
    d->set_state(states[i]);
  }
  return shard;
}

// Rank 0: removes checkpoints of a lower step than `step` beyond the newest keep_last - 1.
std::vector<std::string> Prune(const std::string& root, int64_t step, int64_t keep_last) {
  std::vector<std::string> removed;
  absl::StatusOr<std::vector<CheckpointDir>> dirs = ListCheckpoints(root);
  if (!dirs.ok()) return removed;
  int64_t kept = 1;  // the one just written
  for (const CheckpointDir& d : *dirs) {
    if (d.step >= step) continue;
    if (kept < keep_last) {
      ++kept;
      continue;
    }
    // Renamed first, so that a crash midway leaves a `.tmp` leftover, not a damaged checkpoint.
    std::error_code ec;
    const std::string doomed = d.path + ".tmp";
    fs::remove_all(doomed, ec);
    fs::rename(d.path, doomed, ec);
    if (ec) continue;
    fs::remove_all(doomed, ec);
    removed.push_back(d.path);
  }
  if (!removed.empty()) (void)FsyncDirectory(root);
  return removed;
}

// Rank 0: the manifest, then the rename that makes the checkpoint visible.
absl::Status Commit(const CheckpointManifest& manifest, const std::string& tmp, const std::string& final_dir,
                    const std::string& root) {
  OPENMOE_RETURN_IF_ERROR(CheckTensorIndex(manifest));
  OPENMOE_RETURN_IF_ERROR(WriteFileSynced((fs::path(tmp) / kManifestFile).string(), SerializeManifest(manifest)));
  OPENMOE_RETURN_IF_ERROR(FsyncDirectory(tmp));
  std::error_code ec;
  const std::string replaced = final_dir + ".replaced.tmp";
  const bool had_old = fs::exists(final_dir, ec);
  if (had_old) {
    fs::remove_all(replaced, ec);
    fs::rename(final_dir, replaced, ec);
    if (ec) return FsError(absl::StrCat(final_dir, ": cannot move the old checkpoint of this step aside"), ec);
  }
  fs::rename(tmp, final_dir, ec);
  if (ec) {
    std::error_code ignored;
    if (had_old) fs::rename(replaced, final_dir, ignored);
    return FsError(absl::StrCat(tmp, ": cannot rename to ", final_dir), ec);
  }
  OPENMOE_RETURN_IF_ERROR(FsyncDirectory(root));
  if (had_old) fs::remove_all(replaced, ec);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SaveStats> SaveCheckpoint(Trainer& trainer, const std::string& root, int64_t keep_last) {
  Timer timer;
  Communicator& world = trainer.world();
  const bool rank0 = world.rank() == 0;
  SaveStats stats;
  stats.step = trainer.step();
  stats.path = (fs::path(root) / StepDirName(stats.step)).string();
  const std::string tmp = stats.path + ".tmp";

  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(world, rank0 ? PrepareDirectory(root, tmp) : absl::OkStatus()));
  const CheckpointShard own = WriteOwnShard(trainer, tmp);
  const std::vector<std::string> gathered = AllGatherBytes(world, own.SerializeAsString());

  CheckpointManifest manifest;
  absl::Status status = absl::OkStatus();
  for (const std::string& bytes : gathered) {
    CheckpointShard shard;
    OPENMOE_CHECK(shard.ParseFromString(bytes));
    if (!shard.error().empty() && status.ok()) {
      status = absl::Status(static_cast<absl::StatusCode>(shard.error_code()),
                            absl::StrCat("checkpoint save of step ", stats.step, " failed on rank ", shard.rank(), ": ",
                                         shard.error()));
    }
    for (const TensorEntry& t : shard.tensors()) {
      *manifest.add_tensors() = t;
      ++stats.files;
      stats.raw_bytes += t.raw_bytes();
      stats.compressed_bytes += t.compressed_bytes();
    }
    for (const DataIteratorState& d : shard.data_states()) *manifest.add_data_states() = d;
  }
  if (rank0) {
    if (status.ok()) {
      const Mesh& mesh = trainer.mesh();
      manifest.set_format_version(kCheckpointFormatVersion);
      manifest.set_step(stats.step);
      *manifest.mutable_job() = trainer.spec();
      manifest.mutable_rng()->set_train_seed(trainer.spec().train().seed());
      manifest.mutable_rng()->set_step(stats.step);
      manifest.set_num_chips(mesh.num_chips);
      manifest.set_expert_parallel(mesh.expert_parallel);
      manifest.set_world_size(world.size());
      manifest.set_unix_time(static_cast<int64_t>(std::time(nullptr)));
      status = Commit(manifest, tmp, stats.path, root);
    }
    if (!status.ok()) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
      status = absl::Status(status.code(), absl::StrCat(status.message(), "; ", root,
                                                        " keeps its previous checkpoints"));
    }
  }
  // Every rank saw the same shards; rank 0's status (with the commit's) speaks for all.
  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(world, rank0 ? status : absl::OkStatus()));

  std::string pruned;
  if (rank0) {
    for (const std::string& p : Prune(root, stats.step, keep_last)) absl::StrAppend(&pruned, p, "\n");
  }
  world.Broadcast(&pruned, 0);
  for (absl::string_view p : absl::StrSplit(pruned, '\n', absl::SkipEmpty())) stats.pruned.emplace_back(p);
  stats.seconds = timer.Seconds();
  return stats;
}

}  // namespace openmoe
