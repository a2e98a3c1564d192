#include "launch/checkpoint/writer.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/check.h"
#include "core/io/file.h"
#include "core/timer.h"
#include "launch/checkpoint/index.h"
#include "launch/checkpoint/manifest.h"
#include "launch/checkpoint/tensor_file.h"
#include "launch/checkpoint/threads.h"
#include "parallel/collective_status.h"

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
    if (absl::StartsWith(name, "step_") && absl::EndsWith(name, ".tmp"))
      fs::remove_all(e.path(), ec);
  }
  fs::remove_all(tmp, ec);
  const bool created = fs::create_directory(tmp, ec);
  if (ec) return FsError(absl::StrCat(tmp, ": cannot create"), ec);
  // Removed a moment ago: only another process saving into this checkpoint.dir recreates it.
  if (!created) {
    return absl::FailedPreconditionError(
        absl::StrCat(tmp, ": exists already: is another run saving to this checkpoint.dir?"));
  }
  return absl::OkStatus();
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
absl::Status Commit(const CheckpointManifest& manifest, const std::string& tmp,
                    const std::string& final_dir, const std::string& root) {
  OPENMOE_RETURN_IF_ERROR(CheckTensorIndex(manifest));
  OPENMOE_RETURN_IF_ERROR(WriteCheckpointFileSynced((fs::path(tmp) / kManifestFile).string(),
                                                    SerializeManifest(manifest)));
  OPENMOE_RETURN_IF_ERROR(FsyncDirectory(tmp));
  std::error_code ec;
  const std::string replaced = final_dir + ".replaced.tmp";
  const bool had_old = fs::exists(final_dir, ec);
  if (had_old) {
    fs::remove_all(replaced, ec);
    fs::rename(final_dir, replaced, ec);
    if (ec)
      return FsError(absl::StrCat(final_dir, ": cannot move the old checkpoint of this step aside"),
                     ec);
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

// Collective over `group` (its rank q holding model piece q of t at `piece`): the whole tensor on
// the group's first rank (t.file_size() floats), null on the others. Exact (a copy of every
// element from the piece that holds it).
std::unique_ptr<float[]> GatherPieces(Communicator& group, const LocalTensor& t,
                                      const float* piece) {
  const int size = group.size();
  const bool first = group.rank() == 0;
  std::vector<int64_t> send(size, 0), recv(size, 0);
  send[0] = t.size();
  if (first) recv.assign(size, t.size());  // every piece of a tensor has the same size
  std::unique_ptr<float[]> received(first ? new float[static_cast<size_t>(size * t.size())]
                                          : nullptr);
  group.AllToAllV(piece, send, received.get(), recv);
  if (!first) return nullptr;
  std::unique_ptr<float[]> whole(new float[static_cast<size_t>(t.file_size())]);
  for (int q = 0; q < size; ++q)
    CopyPieceToWhole(PieceOf(t, q), received.get() + q * t.size(), whole.get());
  return whole;
}

}  // namespace

// What one rank writes: the tensors (pointing into the trainer or into a copy), and the rest of
// its part of the manifest.
struct CheckpointSave::State {
  Communicator* world = nullptr;
  JobSpec spec;
  Mesh mesh;
  std::string root, tmp;
  int64_t keep_last = 1;
  SaveStats stats;
  Timer timer;
  double blocking = 0;
  std::vector<LocalTensor> tensors;                // what this rank writes (model pieces: whole)
  std::vector<const float*> sources;               // their data (t.file_size() floats each)
  std::unique_ptr<float[]> copy;                   // background saves: the data, copied
  std::vector<std::unique_ptr<float[]>> gathered;  // background saves: whole model-split tensors
  std::vector<TensorEntry> done;                   // written already (gathered in the foreground)
  absl::Status done_status;                        // the first failure among them
  std::vector<std::string> data_states;  // this rank's data shards (empty: not this rank's)
  int64_t first_shard = 0;
  int threads = 1;
  CheckpointShard shard;  // the result of Write()
  std::atomic<bool> written{false};
  std::thread writer;

  std::string PathOf(size_t i) const { return PathOf(tensors[i]); }

  std::string PathOf(const LocalTensor& t) const {
    return (fs::path(tmp) / TensorFileName(t)).string();
  }

  // Compresses and writes every file, then fsyncs them (with those in `done`); fills `shard`
  // (entries or the error).
  void Write() {
    std::vector<TensorEntry> entries(tensors.size());
    const int64_t n = static_cast<int64_t>(tensors.size());
    absl::Status status = done_status;
    if (status.ok()) {
      status = ForEachInParallel(
          n, threads, [&](int64_t i) { return WriteOne(tensors[i], sources[i], &entries[i]); });
    }
    // Every file was handed to writeback as it was written; now wait for all of them.
    if (status.ok())
      status = ForEachInParallel(n, threads, [&](int64_t i) { return SyncFile(PathOf(i)); });
    if (status.ok()) {
      status = ForEachInParallel(static_cast<int64_t>(done.size()), threads, [&](int64_t i) {
        return SyncFile((fs::path(tmp) / done[i].file()).string());
      });
    }
    shard.set_rank(world->rank());
    if (!status.ok()) {
      shard.set_error(std::string(status.message()));
      shard.set_error_code(static_cast<int>(status.code()));
    } else {
      for (TensorEntry& e : done) *shard.add_tensors() = std::move(e);
      for (TensorEntry& e : entries) *shard.add_tensors() = std::move(e);
      for (size_t i = 0; i < data_states.size(); ++i) {
        DataIteratorState* d = shard.add_data_states();
        d->set_chip(first_shard + static_cast<int64_t>(i));
        d->set_state(data_states[i]);
      }
    }
    copy.reset();
    gathered.clear();
    written.store(true, std::memory_order_release);
  }

  // Writes the file of `t` (whole: t.file_size() floats at `data`) and describes it in `e`.
  absl::Status WriteOne(const LocalTensor& t, const float* data, TensorEntry* out) const {
    absl::StatusOr<TensorFileInfo> info = WriteTensorFile(PathOf(t), data, t.file_size());
    if (!info.ok()) return info.status();
    TensorEntry& e = *out;
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
  }
};

CheckpointSave::CheckpointSave(std::unique_ptr<State> state) : state_(std::move(state)) {}

CheckpointSave::~CheckpointSave() {
  if (state_ != nullptr && state_->writer.joinable()) state_->writer.join();
}

int64_t CheckpointSave::step() const { return state_->stats.step; }

absl::StatusOr<std::unique_ptr<CheckpointSave>> CheckpointSave::Start(Trainer& trainer,
                                                                      const std::string& root,
                                                                      int64_t keep_last,
                                                                      bool background) {
  auto s = std::make_unique<State>();
  s->world = &trainer.world();
  s->spec = trainer.spec();
  s->mesh = trainer.mesh();
  s->root = root;
  s->keep_last = keep_last;
  s->stats.step = trainer.step();
  s->stats.path = (fs::path(root) / StepDirName(s->stats.step)).string();
  s->tmp = s->stats.path + ".tmp";
  const bool rank0 = s->world->rank() == 0;
  OPENMOE_RETURN_IF_ERROR(
      AgreeOnFirstError(*s->world, rank0 ? PrepareDirectory(root, s->tmp) : absl::OkStatus()));

  // Shared tensors by world rank 0; each expert range by the lowest rank of its replica set. A
  // model-split tensor is written whole by the first rank of the model group that writes it
  // (that of world rank 0, or the one of the lowest ranks of its expert replica sets), gathered
  // over the group one tensor at a time.
  Communicator& group = trainer.model_group();
  const bool group_first = group.rank() == 0;
  int64_t leads[2] = {rank0 ? 1 : 0, trainer.replicas().rank() == 0 ? 1 : 0};
  if (group.size() > 1) group.AllReduceSum(leads, 2);
  // The ranks of one model group lead their replica sets together (the same experts, and the
  // lowest group holding them for every piece).
  OPENMOE_CHECK(leads[1] == 0 || leads[1] == group.size());
  const bool group_writes_shared = leads[0] > 0, group_writes_experts = leads[1] > 0;
  std::vector<const float*> bases;
  std::vector<LocalTensor> pieces;
  std::vector<const float*> piece_bases;
  for (LocalTensor& t : LocalTensors(trainer.layout(), &trainer.optimizer())) {
    const float* base =
        (t.kind == TENSOR_PARAM ? trainer.params().data() : trainer.optimizer().state().data()) +
        t.offset;
    if (t.model_piece) {
      if (t.is_expert ? group_writes_experts : group_writes_shared) {
        pieces.push_back(std::move(t));
        piece_bases.push_back(base);
      }
    } else if (t.is_expert ? group_first && trainer.replicas().rank() == 0 : rank0) {
      s->tensors.push_back(std::move(t));
      bases.push_back(base);
    }
  }
  OPENMOE_CHECK(pieces.empty() || group.size() == trainer.layout().model_parts());
  for (size_t i = 0; i < pieces.size(); ++i) {
    std::unique_ptr<float[]> whole = GatherPieces(group, pieces[i], piece_bases[i]);
    if (!group_first) continue;
    pieces[i].model_piece = false;  // written whole
    pieces[i].per_expert = pieces[i].whole_per_expert;
    if (background) {  // written with the rest, from this copy
      s->tensors.push_back(pieces[i]);
      bases.push_back(whole.get());
      s->gathered.push_back(std::move(whole));
    } else if (s->done_status.ok()) {  // now, so that one whole tensor is held at a time
      TensorEntry e;
      s->done_status = s->WriteOne(pieces[i], whole.get(), &e);
      s->done.push_back(std::move(e));
    }
  }
  // Trainer state outside the model (Trainer::CheckpointExtras): shared, so rank 0 writes it, as
  // parameter-kind tensors named "extra.*". The sync is collective: every rank takes part.
  trainer.SyncCheckpointExtras();
  for (const CheckpointExtra& x : trainer.CheckpointExtras()) {
    if (!rank0) break;
    LocalTensor t;
    t.name = x.name;
    t.global_shape = x.shape;
    t.per_expert = 1;
    for (int64_t n : x.shape) t.per_expert *= n;
    s->tensors.push_back(std::move(t));
    bases.push_back(x.data);
  }
  // Background saves copy what they write but the gathered tensors (copies already).
  std::vector<bool> copied(s->tensors.size(), false);
  for (const std::unique_ptr<float[]>& g : s->gathered)
    for (size_t i = 0; i < bases.size(); ++i) copied[i] = copied[i] || bases[i] == g.get();
  int64_t total = 0;
  for (size_t i = 0; i < s->tensors.size(); ++i) total += copied[i] ? 0 : s->tensors[i].size();
  if (background && total > 0) s->copy.reset(new float[static_cast<size_t>(total)]);
  int64_t at = 0;
  for (size_t i = 0; i < s->tensors.size(); ++i) {
    const LocalTensor& t = s->tensors[i];
    const float* base = bases[i];
    if (background && !copied[i]) {
      std::memcpy(s->copy.get() + at, base, static_cast<size_t>(t.size()) * sizeof(float));
      base = s->copy.get() + at;
      at += t.size();
    }
    s->sources.push_back(base);
  }
  // Data-iterator states once per data shard (the ranks of a model group hold the same): by the
  // group's first rank, keyed by global shard id (= chip id without a model axis).
  if (group_first) s->data_states = trainer.DataStates();
  s->first_shard = s->mesh.FirstShard();
  State* raw = s.get();
  if (background) {
    s->threads = 1;  // leave the cores to training
    s->writer = std::thread([raw] {
      // The lowest priority: training keeps its cores; the save uses what they leave idle.
      setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 19);
      raw->Write();
    });
  } else {
    s->threads = CheckpointThreads();
    s->Write();
  }
  s->blocking += s->timer.Seconds();
  return std::unique_ptr<CheckpointSave>(new CheckpointSave(std::move(s)));
}

bool CheckpointSave::WrittenHere() const { return state_->written.load(std::memory_order_acquire); }

absl::StatusOr<SaveStats> CheckpointSave::Finish() {
  State& s = *state_;
  Timer blocked;
  if (s.writer.joinable()) s.writer.join();
  Communicator& world = *s.world;
  const bool rank0 = world.rank() == 0;
  SaveStats& stats = s.stats;
  const std::vector<std::string> gathered = AllGatherBytes(world, s.shard.SerializeAsString());

  CheckpointManifest manifest;
  absl::Status status = absl::OkStatus();
  for (const std::string& bytes : gathered) {
    CheckpointShard shard;
    OPENMOE_CHECK(shard.ParseFromString(bytes));
    if (!shard.error().empty() && status.ok()) {
      status = absl::Status(static_cast<absl::StatusCode>(shard.error_code()),
                            absl::StrCat("checkpoint save of step ", stats.step, " failed on rank ",
                                         shard.rank(), ": ", shard.error()));
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
      manifest.set_format_version(kCheckpointFormatVersion);
      manifest.set_step(stats.step);
      *manifest.mutable_job() = s.spec;
      manifest.mutable_rng()->set_train_seed(s.spec.train().seed());
      manifest.mutable_rng()->set_step(stats.step);
      manifest.set_num_chips(s.mesh.num_chips);
      manifest.set_expert_parallel(s.mesh.expert_parallel);
      manifest.set_world_size(world.size());
      manifest.set_unix_time(static_cast<int64_t>(std::time(nullptr)));
      status = Commit(manifest, s.tmp, stats.path, s.root);
    }
    if (!status.ok()) {
      std::error_code ec;
      fs::remove_all(s.tmp, ec);
      status = absl::Status(status.code(), absl::StrCat(status.message(), "; ", s.root,
                                                        " keeps its previous checkpoints"));
    }
  }
  // Every rank saw the same shards; rank 0's status (with the commit's) speaks for all.
  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(world, rank0 ? status : absl::OkStatus()));

  std::string pruned;
  if (rank0) {
    for (const std::string& p : Prune(s.root, stats.step, s.keep_last))
      absl::StrAppend(&pruned, p, "\n");
  }
  world.Broadcast(&pruned, 0);
  for (absl::string_view p : absl::StrSplit(pruned, '\n', absl::SkipEmpty()))
    stats.pruned.emplace_back(p);
  stats.seconds = s.timer.Seconds();
  stats.blocking_seconds = s.blocking + blocked.Seconds();
  return stats;
}

absl::StatusOr<SaveStats> SaveCheckpoint(Trainer& trainer, const std::string& root,
                                         int64_t keep_last) {
  absl::StatusOr<std::unique_ptr<CheckpointSave>> save =
      CheckpointSave::Start(trainer, root, keep_last, false);
  if (!save.ok()) return save.status();
  return (*save)->Finish();
}

}  // namespace openmoe
