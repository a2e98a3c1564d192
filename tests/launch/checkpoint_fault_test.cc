// Fault injection: every kind of damage to a checkpoint and every failed save is detected and
// named, never damages or deletes an existing checkpoint, and `--resume auto` falls back to the
// previous good one.
#include <filesystem>
#include <map>

#include "gtest/gtest.h"
#include "launch/checkpoint/manifest.h"
#include "launch/checkpoint/reader.h"
#include "launch/checkpoint/restore.h"
#include "launch/checkpoint/tensor_file.h"
#include "launch/checkpoint/writer.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

namespace fs = std::filesystem;
using testing::CheckpointJob;
using testing::MakeTrainer;
using testing::ReadBytes;
using testing::ScratchDir;
using testing::WriteBytes;

// Every file of a directory and its bytes.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) files[e.path().string()] = ReadBytes(e.path().string());
  }
  return files;
}

class CheckpointFault : public ::testing::Test {
 protected:
  // Good checkpoints at steps 1 and 2 of a 4-chip, expert-parallel-2 job.
  void SetUp() override {
    spec_ = CheckpointJob(4, 4, 2);
    trainer_ = MakeTrainer(spec_);
    for (int i = 0; i < 2; ++i) {
      trainer_->Step();
      ASSERT_TRUE(SaveCheckpoint(*trainer_, dir_.path(), 5).ok());
    }
  }
  void TearDown() override { SetWriteFaultHookForTesting(nullptr); }

  std::string Step(int step) const { return dir_.Sub(StepDirName(step)); }
  std::string FileOf(int step, const std::string& name) const { return Step(step) + "/" + name; }

  // Resumes with `auto`: expects step 1 restored, and one warning naming step 2 and `what`.
  void ExpectFallsBackToStep1(const std::string& what) {
    auto fresh = MakeTrainer(spec_);
    auto outcome = ResumeTraining(*fresh, "auto", dir_.path());
    ASSERT_TRUE(outcome.ok()) << outcome.status();
    EXPECT_EQ(outcome->step, 1);
    EXPECT_EQ(outcome->dir, Step(1));
    ASSERT_GE(outcome->warnings.size(), 1u);
    EXPECT_NE(outcome->warnings[0].find("skipping checkpoint " + Step(2)), std::string::npos)
        << outcome->warnings[0];
    EXPECT_NE(outcome->warnings[0].find(what), std::string::npos) << outcome->warnings[0];
    EXPECT_TRUE(fs::exists(Step(2))) << "a damaged checkpoint is reported, not deleted";
    // Loaded exactly step 1: the same as a trainer that resumed from it explicitly.
    auto explicit_one = MakeTrainer(spec_);
    ASSERT_TRUE(RestoreCheckpoint(*explicit_one, Step(1)).ok());
    EXPECT_TRUE(testing::SameBits(fresh->params().data(), explicit_one->params().data(),
                                  fresh->params().size()));
  }
  // Loading step 2 explicitly fails with `code`, naming `what`.
  void ExpectExplicitFails(absl::StatusCode code, const std::string& what) {
    auto fresh = MakeTrainer(spec_);
    auto outcome = RestoreCheckpoint(*fresh, Step(2));
    EXPECT_EQ(outcome.status().code(), code) << outcome.status();
    EXPECT_NE(outcome.status().message().find(what), std::string::npos) << outcome.status();
  }

  ScratchDir dir_;
  JobSpec spec_;
  std::unique_ptr<Trainer> trainer_;
};

TEST_F(CheckpointFault, FlippedByteInATensorFile) {
  const std::string file = FileOf(2, "param.layers.1.moe.experts.wi_0.experts_0-3.zst");
  std::string bytes = ReadBytes(file);
  bytes[bytes.size() / 2] ^= 0x01;
  WriteBytes(file, bytes);
  ExpectFallsBackToStep1(file);
  ExpectExplicitFails(absl::StatusCode::kDataLoss, file);
}

TEST_F(CheckpointFault, FlippedByteInAnAdafactorFile) {
  const std::string file = FileOf(2, "adafactor.embedding.zst");
  std::string bytes = ReadBytes(file);
  bytes[bytes.size() - 10] ^= 0x40;
  WriteBytes(file, bytes);
  ExpectFallsBackToStep1(file);
}

TEST_F(CheckpointFault, TruncatedTensorFile) {
  const std::string file = FileOf(2, "param.logits.zst");
  WriteBytes(file, ReadBytes(file).substr(0, 1000));
  ExpectFallsBackToStep1("truncated");
  ExpectExplicitFails(absl::StatusCode::kDataLoss, file + ": truncated");
}

TEST_F(CheckpointFault, MissingTensorFile) {
  fs::remove(FileOf(2, "param.embedding.zst"));
  ExpectFallsBackToStep1("param.embedding.zst");
  ExpectExplicitFails(absl::StatusCode::kNotFound, "param.embedding.zst");
}

TEST_F(CheckpointFault, DeletedManifest) {
  fs::remove(FileOf(2, kManifestFile));
  ExpectFallsBackToStep1("missing (an incomplete checkpoint)");
  ExpectExplicitFails(absl::StatusCode::kNotFound, "manifest.pbtxt");
}

TEST_F(CheckpointFault, FlippedByteInTheManifest) {
  const std::string file = FileOf(2, kManifestFile);
  std::string bytes = ReadBytes(file);
  bytes[bytes.find("step: 2")] = 'S';
  WriteBytes(file, bytes);
  ExpectFallsBackToStep1("checksum mismatch");
}

TEST_F(CheckpointFault, ManifestOfAnIncompatibleModel) {
  // Step 2 replaced by the checkpoint of a wider model.
  fs::remove_all(Step(2));
  JobSpec wider = spec_;
  wider.mutable_model()->set_d_model(32);
  auto other = MakeTrainer(wider);
  other->Step();
  other->Step();
  ASSERT_TRUE(SaveCheckpoint(*other, dir_.path(), 5).ok());
  ExpectFallsBackToStep1("model.d_model=32 in the checkpoint, 16 in this job");
  ExpectExplicitFails(absl::StatusCode::kFailedPrecondition,
                      "model.d_model=32 in the checkpoint, 16 in this job");
}

TEST_F(CheckpointFault, OptimizerStateOfAnotherFactoring) {
  JobSpec unfactored = spec_;
  unfactored.mutable_optimizer()->set_factored(false);
  // Make some tensor factored in the checkpoint's settings.
  JobSpec factored = spec_;
  factored.mutable_optimizer()->set_min_dim_size_to_factor(16);
  auto writer = MakeTrainer(factored);
  writer->Step();
  ScratchDir other;
  auto saved = SaveCheckpoint(*writer, other.path(), 1);
  ASSERT_TRUE(saved.ok());
  auto loader = MakeTrainer(unfactored);
  auto outcome = RestoreCheckpoint(*loader, saved->path);
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(outcome.status().message().find("optimizer.factored"), std::string::npos)
      << outcome.status();
}

TEST_F(CheckpointFault, NoUsableCheckpointIsAnErrorListingEach) {
  fs::remove(FileOf(1, kManifestFile));
  fs::remove(FileOf(2, kManifestFile));
  auto fresh = MakeTrainer(spec_);
  auto outcome = ResumeTraining(*fresh, "auto", dir_.path());
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(outcome.status().message().find(Step(1)), std::string::npos) << outcome.status();
  EXPECT_NE(outcome.status().message().find(Step(2)), std::string::npos) << outcome.status();
  EXPECT_NE(outcome.status().message().find("--resume never"), std::string::npos)
      << outcome.status();
}

// A write that fails partway through a save (a full disk): named, and nothing existing changes.
void ExpectFailedSaveChangesNothing(Trainer& trainer, const std::string& root,
                                    const std::string& fail_on,
                                    const std::string& expect_in_message) {
  const auto before = Snapshot(root);
  int writes = 0;
  SetWriteFaultHookForTesting([&](const std::string& path) {
    ++writes;
    if (path.find(fail_on) != std::string::npos)
      return absl::ResourceExhaustedError("No space left on device (injected)");
    return absl::OkStatus();
  });
  trainer.Step();
  auto saved = SaveCheckpoint(trainer, root, 1);  // keep_last 1: a successful save would prune
  SetWriteFaultHookForTesting(nullptr);
  ASSERT_FALSE(saved.ok());
  EXPECT_GT(writes, 0);
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kResourceExhausted) << saved.status();
  EXPECT_NE(saved.status().message().find(expect_in_message), std::string::npos) << saved.status();
  EXPECT_NE(saved.status().message().find("keeps its previous checkpoints"), std::string::npos)
      << saved.status();
  EXPECT_EQ(Snapshot(root), before) << "a failed save changed the checkpoint directory";
}

TEST_F(CheckpointFault, FailedTensorWriteMidSave) {
  ExpectFailedSaveChangesNothing(*trainer_, dir_.path(), "param.layers.1.attn.wq.zst",
                                 "param.layers.1.attn.wq.zst");
  // Both earlier checkpoints are intact: resume takes step 2 without a warning.
  auto fresh = MakeTrainer(spec_);
  auto outcome = ResumeTraining(*fresh, "auto", dir_.path());
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(outcome->step, 2);
  EXPECT_TRUE(outcome->warnings.empty());
}

TEST_F(CheckpointFault, FailedManifestWrite) {
  ExpectFailedSaveChangesNothing(*trainer_, dir_.path(), kManifestFile, "manifest.pbtxt");
  // The next save, with the disk fixed, succeeds and prunes as usual.
  trainer_->Step();
  auto saved = SaveCheckpoint(*trainer_, dir_.path(), 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(ListCheckpoints(dir_.path())->size(), 1u);
}

TEST_F(CheckpointFault, CheckpointDirThatCannotBeCreated) {
  WriteBytes(dir_.Sub("a_file"), "x");
  auto saved = SaveCheckpoint(*trainer_, dir_.Sub("a_file/ckpt"), 1);
  ASSERT_FALSE(saved.ok());
  EXPECT_NE(saved.status().message().find("checkpoint.dir=" + dir_.Sub("a_file/ckpt")),
            std::string::npos)
      << saved.status();
}

TEST_F(CheckpointFault, LeftoverOfACrashedSaveIsIgnoredThenRemoved) {
  // A crash mid-save leaves step_N.tmp: never a candidate, cleaned by the next save.
  fs::create_directory(dir_.Sub("step_00000007.tmp"));
  WriteBytes(dir_.Sub("step_00000007.tmp/param.embedding.zst"), "partial");
  auto fresh = MakeTrainer(spec_);
  auto outcome = ResumeTraining(*fresh, "auto", dir_.path());
  ASSERT_TRUE(outcome.ok());
  EXPECT_EQ(outcome->step, 2);
  EXPECT_TRUE(outcome->warnings.empty());
  fresh->Step();
  ASSERT_TRUE(SaveCheckpoint(*fresh, dir_.path(), 5).ok());
  EXPECT_FALSE(fs::exists(dir_.Sub("step_00000007.tmp")));
}

}  // namespace
}  // namespace openmoe
