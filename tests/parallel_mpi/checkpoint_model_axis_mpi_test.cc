// Checkpoints across the model axis: a checkpoint written at model_parallel 4 (its model groups
// spanning ranks, so each rank writes or sends model pieces) holds every tensor whole with its
// global name and shape. Loaded at model_parallel 1 and 2, on the world and on fewer ranks, and
// saved again, every tensor (parameters and optimizer state) is bitwise the first checkpoint's,
// re-read from the files of both; each loader's next 2 losses are the writer's (1e-5 relative), and
// continuing 2 steps from either checkpoint on the writer's layout gives bitwise the same losses.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "launch/checkpoint/export.h"
#include "launch/checkpoint/manifest.h"
#include "launch/checkpoint/reader.h"
#include "launch/checkpoint/restore.h"
#include "launch/checkpoint/tensor_file.h"
#include "launch/checkpoint/writer.h"
#include "tests/testing/layout_check.h"

namespace openmoe {
namespace {

using testing::LayoutJob;
using testing::OnMesh;
using testing::WithModelParallel;

// A directory every rank of `world` sees (rank 0 makes it), removed at the end.
class SharedDir {
 public:
  explicit SharedDir(Communicator& world) : world_(world) {
    if (world.rank() == 0) {
      std::string pattern = ::testing::TempDir() + "openmoe_ckpt_model_XXXXXX";
      EXPECT_NE(mkdtemp(pattern.data()), nullptr);
      path_ = pattern;
    }
    world.Broadcast(&path_, 0);
  }
  ~SharedDir() {
    Barrier(world_);
    std::error_code ec;
    if (world_.rank() == 0) std::filesystem::remove_all(path_, ec);
  }
  static void Barrier(Communicator& comm) {
    int64_t x = 0;
    comm.AllReduceSum(&x, 1);
  }
  const std::string& path() const { return path_; }

 private:
  Communicator& world_;
  std::string path_;
};

// 8 experts; min_dim_size_to_factor 8 factors the attention kernels, the embedding, the logits
// and the experts' matrices (the tiny model's dims are 16 and up), so that factored state is split
// by rows (wo) and by columns (wq, wi_0's pair, logits).
JobSpec Job(int64_t chips, int64_t ep, int64_t mp, OptimizerKind optimizer) {
  JobSpec spec = LayoutJob(8);
  spec.mutable_optimizer()->set_min_dim_size_to_factor(8);
  spec.mutable_train()->set_optimizer(optimizer);
  return WithModelParallel(OnMesh(spec, chips, chips >= 4 ? 4 : chips, ep), mp);
}

std::string Where(const JobSpec& spec, int ranks) {
  return "chips=" + std::to_string(spec.topology().num_chips()) +
         " ep=" + std::to_string(spec.mesh().expert_parallel()) +
         " mp=" + std::to_string(spec.mesh().model_parallel()) + " ranks=" + std::to_string(ranks);
}

std::unique_ptr<Trainer> Make(const JobSpec& spec, Communicator* comm) {
  auto t = Trainer::Create(spec, comm);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(t).value();
}

// Every tensor of a checkpoint, whole (expert tensors: every expert, from all their files), read
// from its files: (kind, name) -> floats.
std::map<std::pair<int, std::string>, std::vector<float>> ReadTensors(const std::string& dir) {
  std::map<std::pair<int, std::string>, std::vector<float>> out;
  auto reader = CheckpointReader::Open(dir);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return out;
  std::map<std::pair<int, std::string>, std::map<int64_t, const TensorEntry*>> files;
  for (const TensorEntry& e : reader->manifest().tensors())
    files[{e.kind(), e.name()}][e.expert_begin()] = &e;
  for (const auto& [key, ranges] : files) {
    std::vector<float>& whole = out[key];
    int64_t next_expert = 0;
    for (const auto& [begin, e] : ranges) {
      EXPECT_EQ(begin, next_expert) << key.second;  // ranges tile the experts
      next_expert = e->expert_end();
      std::vector<float> data(static_cast<size_t>(e->raw_bytes() / 4));
      EXPECT_TRUE(ReadTensorFile(reader->PathOf(*e), *e, data.data()).ok()) << e->file();
      whole.insert(whole.end(), data.begin(), data.end());
    }
  }
  return out;
}

void ExpectSameTensors(const std::string& want_dir, const std::string& got_dir,
                       const std::string& where) {
  const auto want = ReadTensors(want_dir), got = ReadTensors(got_dir);
  ASSERT_EQ(want.size(), got.size()) << where;
  int64_t floats = 0;
  for (const auto& [key, w] : want) {
    auto it = got.find(key);
    ASSERT_NE(it, got.end()) << where << ": " << key.second;
    ASSERT_EQ(it->second.size(), w.size()) << where << ": " << key.second;
    EXPECT_EQ(std::memcmp(it->second.data(), w.data(), 4 * w.size()), 0)
        << where << ": " << TensorKindName(static_cast<TensorKind>(key.first)) << " "
        << key.second;
    floats += static_cast<int64_t>(w.size());
  }
  EXPECT_GT(floats, 10000) << where;
}

// A layout that loads the checkpoint: its job and how many ranks (the first ones) run it.
struct Loader {
  JobSpec spec;
  int ranks = 1;
};

// `writer` on the whole world: 2 steps, save A. Each loader: restore A, save B at once, B's
// tensors == A's (bitwise, from the files). Then the writer's layout continues 2 steps from A
// and from each B: the same losses, bitwise.
void ExpectModelReshards(const JobSpec& writer_spec, const std::vector<Loader>& loaders) {
  auto world = MakeWorldCommunicator();
  SharedDir dir(*world);
  const std::string a_root = dir.path() + "/a";
  std::string a_path;
  {
    auto writer = Make(writer_spec, world.get());
    ASSERT_GT(writer->layout().model_parts(), 1) << "the writer's model groups must span ranks";
    writer->Step();
    writer->Step();
    auto saved = SaveCheckpoint(*writer, a_root, 1);
    ASSERT_TRUE(saved.ok()) << saved.status();
    a_path = saved->path;
  }
  auto from_a = Make(writer_spec, world.get());
  ASSERT_TRUE(RestoreCheckpoint(*from_a, a_path).ok());
  const std::vector<double> want = {from_a->Step().loss, from_a->Step().loss};
  std::vector<std::string> b_paths;
  for (size_t i = 0; i < loaders.size(); ++i) {
    const Loader& l = loaders[i];
    const bool in = world->rank() < l.ranks;
    auto group = world->Split(in ? 0 : 1, world->rank());
    const std::string where = Where(l.spec, l.ranks);
    const std::string b_root = dir.path() + "/b" + std::to_string(i);
    if (in) {
      auto loaded = Make(l.spec, group.get());
      auto outcome = RestoreCheckpoint(*loaded, a_path);
      ASSERT_TRUE(outcome.ok()) << where << ": " << outcome.status();
      EXPECT_EQ(loaded->step(), 2) << where;
      auto saved = SaveCheckpoint(*loaded, b_root, 1);
      ASSERT_TRUE(saved.ok()) << where << ": " << saved.status();
      if (group->rank() == 0) ExpectSameTensors(a_path, saved->path, where);
      // Its own layout continues as the writer's does (to float rounding): the pieces were put
      // where the whole tensors hold them, not merely written and read back alike.
      for (int s = 0; s < 2; ++s) {
        const double got = loaded->Step().loss;
        EXPECT_NEAR(got, want[s], 1e-5 * std::fabs(want[s])) << where << " step " << 2 + s;
      }
    }
    SharedDir::Barrier(*world);
    b_paths.push_back(b_root + "/step_00000002");
  }
  for (size_t i = 0; i < loaders.size(); ++i) {
    auto from_b = Make(writer_spec, world.get());
    auto outcome = RestoreCheckpoint(*from_b, b_paths[i]);
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    for (int s = 0; s < 2; ++s) {
      EXPECT_EQ(from_b->Step().loss, want[s])
          << "continuing from the resave of " << Where(loaders[i].spec, loaders[i].ranks)
          << ", step " << 2 + s;
    }
  }
}

// The loaders of a 4-chip checkpoint: model_parallel 1 and 2 on the world, and fewer ranks.
std::vector<Loader> Loaders(int world_size, int64_t ep, OptimizerKind optimizer) {
  std::vector<Loader> out = {{Job(4, ep, 1, optimizer), world_size},
                             {Job(4, ep, 2, optimizer), world_size},
                             {Job(2, 1, 2, optimizer), 2},  // 2 pieces over 2 ranks
                             {Job(1, 1, 1, optimizer), 1}};
  return out;
}

TEST(CheckpointModelAxisMpi, AdafactorFromModelParallel4ToModelParallel1And2) {
  auto world = MakeWorldCommunicator();
  // 4 chips, one model group: its pieces over 4 ranks (or 2 each on 2 ranks).
  ExpectModelReshards(Job(4, 1, 4, OPTIMIZER_ADAFACTOR),
                      Loaders(world->size(), 1, OPTIMIZER_ADAFACTOR));
}

TEST(CheckpointModelAxisMpi, AdamWFromModelParallel4ToModelParallel1And2) {
  auto world = MakeWorldCommunicator();
  ExpectModelReshards(Job(4, 1, 4, OPTIMIZER_ADAMW), Loaders(world->size(), 1, OPTIMIZER_ADAMW));
}

// Shared experts (split on mlp like a dense FFN) written from model pieces and loaded at
// model_parallel 1 and 2.
TEST(CheckpointModelAxisMpi, SharedExpertsFromModelParallel4ToModelParallel1And2) {
  auto world = MakeWorldCommunicator();
  auto shared = [](JobSpec spec) { return testing::WithSharedExperts(std::move(spec), 2, 16); };
  std::vector<Loader> loaders = Loaders(world->size(), 1, OPTIMIZER_ADAFACTOR);
  for (Loader& l : loaders) l.spec = shared(l.spec);
  ExpectModelReshards(shared(Job(4, 1, 4, OPTIMIZER_ADAFACTOR)), loaders);
}

// Two model groups that hold different experts (8 chips, model 4, expert 2): on 4 ranks each
// group spans 2 ranks, and each group writes its own experts whole over its pieces.
TEST(CheckpointModelAxisMpi, ModelGroupsWithTheirOwnExpertsWriteThemWhole) {
  auto world = MakeWorldCommunicator();
  if (world->size() != 4) GTEST_SKIP() << "needs 4 ranks";
  ExpectModelReshards(Job(8, 2, 4, OPTIMIZER_ADAFACTOR),
                      {{Job(8, 4, 2, OPTIMIZER_ADAFACTOR), 4},
                       {Job(4, 2, 1, OPTIMIZER_ADAFACTOR), 2},
                       {Job(1, 1, 1, OPTIMIZER_ADAFACTOR), 1}});
}

// The data-iterator states: one per data shard, carried over to a job with as many shards.
TEST(CheckpointModelAxisMpi, DataStatesArePerShardAndRestoredForTheSameShardCount) {
  auto world = MakeWorldCommunicator();
  SharedDir dir(*world);
  const JobSpec spec = Job(4, 1, 2, OPTIMIZER_ADAFACTOR);  // 2 data shards
  auto writer = Make(spec, world.get());
  writer->Step();
  auto saved = SaveCheckpoint(*writer, dir.path(), 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  std::vector<double> want = {writer->Step().loss, writer->Step().loss};
  if (world->rank() == 0) {
    auto reader = CheckpointReader::Open(saved->path);
    ASSERT_TRUE(reader.ok()) << reader.status();
    ASSERT_EQ(reader->manifest().data_states_size(), 2);
    std::vector<int64_t> shards;
    for (const DataIteratorState& d : reader->manifest().data_states()) shards.push_back(d.chip());
    std::sort(shards.begin(), shards.end());
    EXPECT_EQ(shards, (std::vector<int64_t>{0, 1}));
    // 2 chips without a model axis: 2 shards, the states restored without a warning.
    auto alone = Make(Job(2, 1, 1, OPTIMIZER_ADAFACTOR), nullptr);
    auto outcome = RestoreCheckpoint(*alone, saved->path);
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    EXPECT_TRUE(outcome->warnings.empty()) << outcome->warnings[0];
    const std::vector<std::string> states = alone->DataStates();
    ASSERT_EQ(states.size(), 2u);
    for (const DataIteratorState& d : reader->manifest().data_states())
      EXPECT_EQ(states[d.chip()], d.state()) << "shard " << d.chip();
    for (int s = 0; s < 2; ++s)
      EXPECT_NEAR(alone->Step().loss, want[s], 1e-5 * want[s]) << "step " << 1 + s;
    // 4 chips without a model axis: 4 shards, so they are not.
    auto four = Make(Job(4, 1, 1, OPTIMIZER_ADAFACTOR), nullptr);
    auto other = RestoreCheckpoint(*four, saved->path);
    ASSERT_TRUE(other.ok()) << other.status();
    ASSERT_EQ(other->warnings.size(), 1u);
    EXPECT_NE(other->warnings[0].find("data-iterator states are not restored"), std::string::npos);
  }
  SharedDir::Barrier(*world);
}

// A background save gathers the pieces in Start and writes the copies later: the same tensors as a
// save in the foreground, though training changes the buffers in between.
TEST(CheckpointModelAxisMpi, BackgroundSaveWritesWhatTheForegroundSaveWrites) {
  auto world = MakeWorldCommunicator();
  SharedDir dir(*world);
  auto trainer = Make(Job(4, 1, 4, OPTIMIZER_ADAFACTOR), world.get());
  ASSERT_GT(trainer->layout().model_parts(), 1);
  trainer->Step();
  auto fg = SaveCheckpoint(*trainer, dir.path() + "/fg", 1);
  ASSERT_TRUE(fg.ok()) << fg.status();
  auto bg = CheckpointSave::Start(*trainer, dir.path() + "/bg", 1, /*background=*/true);
  ASSERT_TRUE(bg.ok()) << bg.status();
  trainer->Step();  // changes every parameter and statistic while the files are written
  auto finished = (*bg)->Finish();
  ASSERT_TRUE(finished.ok()) << finished.status();
  if (world->rank() == 0) ExpectSameTensors(fg->path, finished->path, "background");
  SharedDir::Barrier(*world);
}

// The exported weights of a model_parallel 4 checkpoint are whole, and init_from_safetensors puts
// them back as each layout's pieces.
TEST(CheckpointModelAxisMpi, ExportedWeightsLoadIntoModelPieces) {
  auto world = MakeWorldCommunicator();
  SharedDir dir(*world);
  const JobSpec spec = Job(4, 1, 4, OPTIMIZER_ADAFACTOR);
  auto trainer = Make(spec, world.get());
  trainer->Step();
  auto saved = SaveCheckpoint(*trainer, dir.path(), 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  const std::string weights = dir.path() + "/w.safetensors";
  std::string exported = "ok";
  if (world->rank() == 0) {
    auto stats = ExportSafetensors(saved->path, weights);
    if (!stats.ok()) exported = std::string(stats.status().message());
  }
  world->Broadcast(&exported, 0);
  ASSERT_EQ(exported, "ok");
  std::vector<float> params(trainer->layout().total_size(), -1.0f);
  ASSERT_TRUE(LoadParamsFromSafetensors(weights, trainer->layout(), params.data()).ok());
  for (const ParamInfo& p : trainer->layout().params()) {
    EXPECT_EQ(std::memcmp(params.data() + p.offset, trainer->params().data() + p.offset,
                          4 * p.size),
              0)
        << p.name;
  }
  SharedDir::Barrier(*world);
}

// A failed write of a gathered tensor on the rank that writes it fails the save on every rank.
TEST(CheckpointModelAxisMpi, FailedWriteOfAGatheredTensorFailsTheSaveEverywhere) {
  auto world = MakeWorldCommunicator();
  SharedDir dir(*world);
  auto trainer = Make(Job(4, 1, 4, OPTIMIZER_ADAFACTOR), world.get());
  trainer->Step();
  if (world->rank() == 0) {
    SetWriteFaultHookForTesting([](const std::string& path) {
      return path.find("layers.0.attn.wq") != std::string::npos
                 ? absl::ResourceExhaustedError("injected")
                 : absl::OkStatus();
    });
  }
  auto failed = SaveCheckpoint(*trainer, dir.path(), 1);
  SetWriteFaultHookForTesting(nullptr);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("layers.0.attn.wq"), std::string::npos)
      << failed.status();
  SharedDir::Barrier(*world);
  auto list = ListCheckpoints(dir.path());
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
  // The next save works.
  ASSERT_TRUE(SaveCheckpoint(*trainer, dir.path(), 1).ok());
}

}  // namespace
}  // namespace openmoe
