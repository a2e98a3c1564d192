// Checkpoints across MPI ranks: several ranks writing their experts into one checkpoint, bitwise
// resume on the same layout, resharding to other chip counts, world sizes and expert parallelism
// (1 chip on 1 rank, v3-128 with expert parallelism 16), a failed write on one rank, and a stop
// signal that reaches a single rank.
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "gtest/gtest.h"
#include "launch/checkpoint/manifest.h"
#include "launch/checkpoint/reader.h"
#include "launch/checkpoint/restore.h"
#include "launch/checkpoint/session.h"
#include "launch/checkpoint/tensor_file.h"
#include "launch/checkpoint/writer.h"
#include "tests/testing/layout_check.h"

namespace openmoe {
namespace {

using testing::LayoutJob;
using testing::OnMesh;

// A directory every rank sees (rank 0 makes it), removed at the end.
class SharedDir {
 public:
  explicit SharedDir(Communicator& world) : world_(world) {
    if (world.rank() == 0) {
      std::string pattern = ::testing::TempDir() + "openmoe_ckpt_mpi_XXXXXX";
      EXPECT_NE(mkdtemp(pattern.data()), nullptr);
      path_ = pattern;
    }
    world.Broadcast(&path_, 0);
  }
  ~SharedDir() {
    Barrier();
    std::error_code ec;
    if (world_.rank() == 0) std::filesystem::remove_all(path_, ec);
  }
  void Barrier() {
    int64_t x = 0;
    world_.AllReduceSum(&x, 1);
  }
  const std::string& path() const { return path_; }

 private:
  Communicator& world_;
  std::string path_;
};

// 16 experts; 256 rows x 8 tokens in groups of 16, so that 1 to 128 chips get whole groups.
JobSpec Job(int64_t chips, int64_t torus_x, int64_t ep) {
  JobSpec spec = LayoutJob(16);
  spec.mutable_train()->set_batch_rows(256);
  return OnMesh(spec, chips, torus_x, ep);
}

std::unique_ptr<Trainer> Make(const JobSpec& spec, Communicator* comm) {
  auto t = Trainer::Create(spec, comm);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(t).value();
}

std::string Where(const JobSpec& spec, int ranks) {
  return "chips=" + std::to_string(spec.topology().num_chips()) +
         " ep=" + std::to_string(spec.mesh().expert_parallel()) + " ranks=" + std::to_string(ranks);
}

// Saves `from` (on the world) after 2 steps; each of `to` loads it (on the world, or on this
// process alone for a one-chip job) and its next 2 losses match `from` continuing.
void ExpectReshards(const JobSpec& from, const std::vector<JobSpec>& to) {
  auto world = MakeWorldCommunicator();
  SharedDir dir(*world);
  auto writer = Make(from, world.get());
  writer->Step();
  writer->Step();
  auto saved = SaveCheckpoint(*writer, dir.path(), 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  std::vector<double> want = {writer->Step().loss, writer->Step().loss};

  for (const JobSpec& spec : to) {
    const bool alone = spec.topology().num_chips() == 1;
    auto loaded = Make(spec, alone ? nullptr : world.get());
    const std::string where = Where(spec, alone ? 1 : world->size());
    auto outcome = RestoreCheckpoint(*loaded, saved->path);
    ASSERT_TRUE(outcome.ok()) << where << ": " << outcome.status();
    EXPECT_EQ(loaded->step(), 2);
    for (int i = 0; i < 2; ++i) {
      const double got = loaded->Step().loss;
      EXPECT_NEAR(got, want[i], 1e-5 * std::fabs(want[i])) << where << " step " << 2 + i;
    }
  }
}

TEST(CheckpointMpi, V3_64Ep8ToOneChipAndV3_128Ep16) {
  ExpectReshards(Job(64, 8, 8), {Job(1, 1, 1), Job(128, 16, 16), Job(64, 8, 8)});
}

// Fewer chips per rank than the expert axis: each replica set writes its own range of experts.
TEST(CheckpointMpi, SeveralRanksWriteTheirExpertsAndAnyLayoutReadsThem) {
  auto world = MakeWorldCommunicator();
  const JobSpec spec = Job(8, 4, 8);  // 2 or 4 ranks: 4 or 2 chips per rank, 8 or 4 experts each
  {
    SharedDir dir(*world);
    auto writer = Make(spec, world.get());
    writer->Step();
    auto saved = SaveCheckpoint(*writer, dir.path(), 1);
    ASSERT_TRUE(saved.ok()) << saved.status();
    if (world->rank() == 0) {
      auto reader = CheckpointReader::Open(saved->path);
      ASSERT_TRUE(reader.ok()) << reader.status();
      EXPECT_TRUE(reader->VerifyAllFiles().ok());
      int64_t ranges = 0;
      for (const TensorEntry& t : reader->manifest().tensors()) {
        if (t.name() == "layers.1.moe.experts.wo" && t.kind() == TENSOR_PARAM) ++ranges;
      }
      EXPECT_EQ(ranges, world->size());
      EXPECT_EQ(reader->manifest().world_size(), world->size());
      EXPECT_EQ(reader->manifest().data_states_size(), 8);
    }
  }
  ExpectReshards(spec, {Job(1, 1, 1), Job(16, 4, 16), Job(8, 4, 2), Job(128, 16, 16)});
}

TEST(CheckpointMpi, ResumeOnTheSameLayoutIsBitwiseExact) {
  auto world = MakeWorldCommunicator();
  SharedDir dir(*world);
  const JobSpec spec = Job(8, 4, 8);
  auto reference = Make(spec, world.get());
  std::vector<double> want;
  for (int i = 0; i < 4; ++i) want.push_back(reference->Step().loss);
  auto first = Make(spec, world.get());
  first->Step();
  first->Step();
  ASSERT_TRUE(SaveCheckpoint(*first, dir.path(), 1).ok());
  auto resumed = Make(spec, world.get());
  auto outcome = ResumeTraining(*resumed, "auto", dir.path());
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_TRUE(outcome->warnings.empty());
  for (int i = 2; i < 4; ++i) EXPECT_EQ(resumed->Step().loss, want[i]) << "step " << i;
  EXPECT_EQ(std::memcmp(resumed->params().data(), reference->params().data(),
                        4 * reference->params().size()),
            0);
  EXPECT_EQ(std::memcmp(resumed->optimizer().state().data(), reference->optimizer().state().data(),
                        4 * reference->optimizer().state().size()),
            0);
}

TEST(CheckpointMpi, FailedWriteOnOneRankFailsTheSaveEverywhereAndKeepsTheOldOne) {
  auto world = MakeWorldCommunicator();
  SharedDir dir(*world);
  auto trainer = Make(Job(8, 4, 8), world.get());
  trainer->Step();
  ASSERT_TRUE(SaveCheckpoint(*trainer, dir.path(), 1).ok());
  const int victim = world->size() - 1;
  if (world->rank() == victim) {
    SetWriteFaultHookForTesting([](const std::string& path) {
      return path.find("moe.experts.wi_1") != std::string::npos
                 ? absl::ResourceExhaustedError("injected")
                 : absl::OkStatus();
    });
  }
  trainer->Step();
  auto failed = SaveCheckpoint(*trainer, dir.path(), 1);
  SetWriteFaultHookForTesting(nullptr);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("failed on rank " + std::to_string(victim)),
            std::string::npos)
      << failed.status();
  EXPECT_NE(failed.status().message().find("moe.experts.wi_1"), std::string::npos)
      << failed.status();
  dir.Barrier();
  auto list = ListCheckpoints(dir.path());
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ(list->front().step, 1);
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/step_00000002.tmp"));
  if (world->rank() == 0) {
    auto reader = CheckpointReader::Open(list->front().path);
    ASSERT_TRUE(reader.ok());
    EXPECT_TRUE(reader->VerifyAllFiles().ok());
  }
}

// SIGTERM reaching one rank only: every rank stops after the same step, with a checkpoint.
TEST(CheckpointMpi, StopSignalOnOneRankStopsAllAfterASave) {
  auto world = MakeWorldCommunicator();
  SharedDir dir(*world);
  JobSpec spec = Job(8, 4, 8);
  spec.mutable_checkpoint()->set_dir(dir.path());
  auto trainer = Make(spec, world.get());
  auto session = CheckpointSession::Start(*trainer);
  ASSERT_TRUE(session.ok()) << session.status();
  trainer->Step();
  auto stop = (*session)->AfterStep(*trainer);
  ASSERT_TRUE(stop.ok());
  EXPECT_FALSE(*stop);
  trainer->Step();
  if (world->rank() == world->size() - 1) std::raise(SIGTERM);
  stop = (*session)->AfterStep(*trainer);
  ASSERT_TRUE(stop.ok()) << stop.status();
  EXPECT_TRUE(*stop);
  auto list = ListCheckpoints(dir.path());
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ(list->front().step, 2);
}

}  // namespace
}  // namespace openmoe
