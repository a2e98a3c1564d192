// Resume equality: N steps, save, a new Trainer restored from the checkpoint, N more steps give
// bitwise the metrics, parameters and optimizer state of 2N uninterrupted steps. Plus what
// `--resume auto|never|DIR` picks and what keep_last keeps.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "launch/checkpoint/manifest.h"
#include "launch/checkpoint/reader.h"
#include "launch/checkpoint/restore.h"
#include "launch/checkpoint/session.h"
#include "launch/checkpoint/writer.h"
#include "tests/data/fixtures.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

using testing::CheckpointJob;
using testing::MakeTrainer;
using testing::SameBits;
using testing::ScratchDir;

// Everything a step reports except its wall time, every float in hex (bitwise comparison).
std::string Record(const JobSpec&, const StepResult& r) {
  const DecoderSums& s = r.sums;
  std::string out = absl::StrFormat(
      "step %d loss %a lr %a grad_norm %a tokens %d ce %a z %a weight %a correct %d", r.step,
      r.loss, r.learning_rate, r.grad_norm, r.tokens, s.lm.cross_entropy, s.lm.z_loss, s.lm.weight,
      s.lm.correct);
  for (const RouterLossSums& l : s.router)
    absl::StrAppendFormat(&out, " lb %a rz %a", l.load_balance, l.z_loss);
  for (const RoutingStats& st : s.routing) {
    absl::StrAppend(&out, " routed ", absl::StrJoin(st.routed_per_expert, ","), " kept ",
                    absl::StrJoin(st.kept_per_expert, ","), " dropped ",
                    absl::StrJoin(st.dropped_by_choice, ","), " by_position ",
                    absl::StrJoin(st.dropped_by_position_bucket, ","), " full ",
                    st.tokens_fully_dropped);
    absl::StrAppendFormat(&out, " entropy %a", st.entropy_sum);
  }
  return out;
}

void ExpectResumeIsBitwiseExact(const JobSpec& spec, int n) {
  ScratchDir dir;
  auto reference = MakeTrainer(spec);
  std::vector<std::string> want;
  for (int i = 0; i < 2 * n; ++i) want.push_back(Record(spec, reference->Step()));

  auto first = MakeTrainer(spec);
  for (int i = 0; i < n; ++i) ASSERT_EQ(Record(spec, first->Step()), want[i]);
  auto saved = SaveCheckpoint(*first, dir.path(), 3);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->step, n);
  first.reset();

  auto resumed = MakeTrainer(spec);
  auto outcome = ResumeTraining(*resumed, "auto", dir.path());
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_TRUE(outcome->restored);
  EXPECT_EQ(outcome->step, n);
  EXPECT_TRUE(outcome->warnings.empty());
  EXPECT_EQ(resumed->step(), n);
  for (int i = n; i < 2 * n; ++i) EXPECT_EQ(Record(spec, resumed->Step()), want[i]) << "step " << i;
  EXPECT_TRUE(
      SameBits(resumed->params().data(), reference->params().data(), reference->params().size()));
  EXPECT_TRUE(SameBits(resumed->optimizer().state().data(), reference->optimizer().state().data(),
                       reference->optimizer().state().size()));
}

TEST(CheckpointResume, OneChipIsBitwiseExact) {
  ExpectResumeIsBitwiseExact(CheckpointJob(4, 1, 1), 3);
}

TEST(CheckpointResume, EightChipsExpertParallelIsBitwiseExact) {
  ExpectResumeIsBitwiseExact(CheckpointJob(8, 8, 4), 3);
}

TEST(CheckpointResume, MicrobatchesAreBitwiseExact) {
  ExpectResumeIsBitwiseExact(CheckpointJob(4, 4, 2, /*microbatches=*/2), 2);
}

// Shared experts' parameters and optimizer state travel with the others (8 chips, ep 4).
TEST(CheckpointResume, SharedExpertsAreBitwiseExact) {
  ExpectResumeIsBitwiseExact(testing::WithSharedExperts(CheckpointJob(8, 8, 4), 2, 16), 3);
}

TEST(CheckpointResume, DenseModelIsBitwiseExact) {
  ExpectResumeIsBitwiseExact(CheckpointJob(0, 2, 1), 2);
}

// Real data: a jsonl corpus through the sentencepiece tokenizer, the UL2 mixture and packing, each
// chip with its own iterator whose state the checkpoint carries.
TEST(CheckpointResume, CorpusDataWithUl2IsBitwiseExact) {
  ScratchDir dir;
  const std::string corpus = dir.Sub("corpus.jsonl");
  testing::WriteOrDie(corpus, testing::JsonlOf(testing::GeneratedDocuments(7, 300)));
  JobSpec spec = CheckpointJob(4, 4, 2);
  spec.mutable_model()->set_vocab_size(512);
  *spec.mutable_data() = testing::CorpusJob({corpus}, spec.train().seq_len(), OBJECTIVE_UL2).data();
  ExpectResumeIsBitwiseExact(spec, 3);
}

TEST(CheckpointResume, SavedCheckpointVerifiesAndRecordsTheRun) {
  ScratchDir dir;
  const JobSpec spec = CheckpointJob(8, 8, 4);
  auto trainer = MakeTrainer(spec);
  trainer->Step();
  auto saved = SaveCheckpoint(*trainer, dir.path(), 3);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->path, dir.Sub("step_00000001"));
  EXPECT_GT(saved->raw_bytes, 0);
  EXPECT_LT(saved->compressed_bytes, saved->raw_bytes);
  auto reader = CheckpointReader::Open(saved->path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE(reader->VerifyAllFiles().ok());
  const CheckpointManifest& m = reader->manifest();
  EXPECT_EQ(m.step(), 1);
  EXPECT_EQ(m.num_chips(), 8);
  EXPECT_EQ(m.expert_parallel(), 4);
  EXPECT_EQ(m.rng().train_seed(), spec.train().seed());
  EXPECT_EQ(m.data_states_size(), 8);
  EXPECT_EQ(m.job().SerializeAsString(), spec.SerializeAsString());
  // Nothing temporary is left behind.
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().filename().string(), "step_00000001");
  }
}

TEST(CheckpointResume, KeepLastKeepsTheNewestAndNeverHigherSteps) {
  ScratchDir dir;
  const JobSpec spec = CheckpointJob(4, 1, 1);
  // Another run's checkpoint at a higher step: never pruned by this run.
  {
    auto other = MakeTrainer(spec);
    for (int i = 0; i < 9; ++i) other->Step();
    ASSERT_TRUE(SaveCheckpoint(*other, dir.path(), 1).ok());
  }
  auto trainer = MakeTrainer(spec);
  for (int i = 0; i < 5; ++i) {
    trainer->Step();
    auto saved = SaveCheckpoint(*trainer, dir.path(), 2);
    ASSERT_TRUE(saved.ok()) << saved.status();
    if (i >= 2) {
      ASSERT_EQ(saved->pruned.size(), 1u);
      EXPECT_EQ(saved->pruned[0], dir.Sub(StepDirName(i - 1)));
    }
  }
  auto list = ListCheckpoints(dir.path());
  ASSERT_TRUE(list.ok());
  std::vector<int64_t> steps;
  for (const CheckpointDir& d : *list) steps.push_back(d.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{9, 5, 4}));
}

TEST(CheckpointResume, NeverAutoAndExplicitDirectory) {
  ScratchDir dir;
  const JobSpec spec = CheckpointJob(4, 1, 1);
  auto trainer = MakeTrainer(spec);
  for (int i = 0; i < 3; ++i) {
    trainer->Step();
    ASSERT_TRUE(SaveCheckpoint(*trainer, dir.path(), 5).ok());
  }
  auto fresh = MakeTrainer(spec);
  auto never = ResumeTraining(*fresh, "never", dir.path());
  ASSERT_TRUE(never.ok());
  EXPECT_FALSE(never->restored);
  EXPECT_EQ(fresh->step(), 0);

  auto empty = ResumeTraining(*fresh, "auto", dir.Sub("nothing_here"));
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->restored);

  auto newest = ResumeTraining(*fresh, "auto", dir.path());
  ASSERT_TRUE(newest.ok());
  EXPECT_EQ(newest->step, 3);
  EXPECT_EQ(fresh->step(), 3);

  auto explicit_dir = ResumeTraining(*fresh, dir.Sub("step_00000002"), dir.path());
  ASSERT_TRUE(explicit_dir.ok()) << explicit_dir.status();
  EXPECT_EQ(explicit_dir->step, 2);
  EXPECT_EQ(fresh->step(), 2);

  auto missing = ResumeTraining(*fresh, dir.Sub("step_00000099"), dir.path());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("step_00000099"), std::string::npos)
      << missing.status();

  // The directory of checkpoints instead of one of them: the error says which to pass.
  auto parent = ResumeTraining(*fresh, dir.path(), "");
  EXPECT_NE(parent.status().message().find("step_00000003 (the newest)"), std::string::npos)
      << parent.status();
}

TEST(CheckpointResume, SavingTheSameStepAgainReplacesItCompletely) {
  ScratchDir dir;
  const JobSpec spec = CheckpointJob(4, 1, 1);
  auto trainer = MakeTrainer(spec);
  trainer->Step();
  ASSERT_TRUE(SaveCheckpoint(*trainer, dir.path(), 3).ok());
  trainer->params()[0] += 1.0f;  // different contents, same step
  ASSERT_TRUE(SaveCheckpoint(*trainer, dir.path(), 3).ok());
  auto again = MakeTrainer(spec);
  ASSERT_TRUE(ResumeTraining(*again, "auto", dir.path()).ok());
  EXPECT_EQ(again->params()[0], trainer->params()[0]);
  EXPECT_EQ(ListCheckpoints(dir.path())->size(), 1u);
}

}  // namespace
}  // namespace openmoe

namespace openmoe {
namespace {

// Interval saves written in the background hold the state of their step, not of the steps
// trained while they were being written; resuming from one is still bitwise exact.
TEST(CheckpointSessionAsync, BackgroundSaveHoldsItsStepAndResumesExactly) {
  ScratchDir dir;
  JobSpec spec = CheckpointJob(8, 8, 4);
  spec.mutable_checkpoint()->set_dir(dir.path());
  spec.mutable_checkpoint()->set_every_steps(2);
  spec.mutable_checkpoint()->set_keep_last(10);
  spec.mutable_checkpoint()->set_async_save(true);
  auto reference = MakeTrainer(spec);
  std::vector<std::string> want;
  for (int i = 0; i < 5; ++i) want.push_back(Record(spec, reference->Step()));

  auto trainer = MakeTrainer(spec);
  auto session = CheckpointSession::Start(*trainer);
  ASSERT_TRUE(session.ok()) << session.status();
  for (int i = 0; i < 3; ++i) {
    trainer->Step();
    auto stop = (*session)->AfterStep(*trainer);
    ASSERT_TRUE(stop.ok()) << stop.status();
    EXPECT_FALSE(*stop);
  }
  ASSERT_TRUE((*session)->Finish(*trainer).ok());  // commits step 2, saves step 3
  session->reset();
  auto list = ListCheckpoints(dir.path());
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[1].step, 2);
  EXPECT_TRUE(CheckpointReader::Open((*list)[1].path)->VerifyAllFiles().ok());

  auto resumed = MakeTrainer(spec);
  ASSERT_TRUE(RestoreCheckpoint(*resumed, (*list)[1].path).ok());
  for (int i = 2; i < 5; ++i) EXPECT_EQ(Record(spec, resumed->Step()), want[i]) << "step " << i;
  EXPECT_TRUE(
      SameBits(resumed->params().data(), reference->params().data(), reference->params().size()));
}

}  // namespace
}  // namespace openmoe
