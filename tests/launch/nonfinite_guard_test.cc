// The non-finite guard: a step with a non-finite loss or gradient is skipped (no update), too many
// of them stop the run, parameters that an update made non-finite stop it at once, a checkpoint is
// never written with a NaN or infinity, and `--resume auto` skips one that holds any.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "launch/checkpoint/manifest.h"
#include "launch/checkpoint/restore.h"
#include "launch/checkpoint/session.h"
#include "launch/checkpoint/writer.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

using testing::CheckpointJob;
using testing::MakeTrainer;
using testing::SameBits;
using testing::ScratchDir;

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

JobSpec GuardJob(const std::string& ckpt = "") {
  JobSpec spec = CheckpointJob(/*experts=*/4, /*chips=*/1, /*ep=*/1);
  spec.mutable_train()->set_max_skipped_steps(2);
  if (!ckpt.empty()) {
    spec.mutable_checkpoint()->set_dir(ckpt);
    spec.mutable_checkpoint()->set_every_steps(1);
  }
  return spec;
}

// Makes every logit overflow: the loss and the gradients are NaN while the parameters stay finite.
void PoisonLogits(Trainer& t) {
  const ParamInfo& logits = t.layout().Get("logits");
  for (int64_t i = 0; i < logits.size; ++i) t.params()[logits.offset + i] = 3e38f;
}

TEST(NonFiniteGuard, SkippedStepLeavesParametersUntouchedAndCountsUntilTheLimit) {
  auto t = MakeTrainer(GuardJob());
  ASSERT_TRUE(t->TryStep().ok());
  PoisonLogits(*t);
  const std::vector<float> before(t->params().data(), t->params().data() + t->layout().total_size());
  for (int i = 1; i <= 2; ++i) {
    auto r = t->TryStep();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->skipped);
    EXPECT_FALSE(std::isfinite(r->loss));
    EXPECT_EQ(r->skipped_steps, i);
    EXPECT_EQ(t->step(), 1 + i);  // the batch is used and the step counted
    EXPECT_TRUE(SameBits(before.data(), t->params().data(), t->layout().total_size()));
  }
  auto third = t->TryStep();
  ASSERT_FALSE(third.ok());
  EXPECT_TRUE(absl::StrContains(third.status().message(), "step 4:")) << third.status();
  EXPECT_TRUE(absl::StrContains(third.status().message(), "train.max_skipped_steps=2"))
      << third.status();
}

TEST(NonFiniteGuard, NonFiniteParametersStopTheRunNamingTheTensor) {
  auto t = MakeTrainer(GuardJob());
  ASSERT_TRUE(t->TryStep().ok());
  const ParamInfo& wq = t->layout().Get("layers.1.attn.wq");
  t->params()[wq.offset + 5] = kInf;  // as an update with an infinite learning rate leaves them
  auto r = t->TryStep();
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "parameter layers.1.attn.wq holds inf at index 5"))
      << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "the update of step 1")) << r.status();
}

TEST(NonFiniteGuard, InfiniteLearningRateLeavesNoCheckpointAndASaneRunStartsFresh) {
  ScratchDir dir;
  const std::string ckpt = dir.Sub("ckpt");
  JobSpec spec = GuardJob(ckpt);
  spec.mutable_schedule()->set_peak_learning_rate(std::numeric_limits<double>::infinity());
  auto t = MakeTrainer(spec);
  auto session = CheckpointSession::Start(*t);
  ASSERT_TRUE(session.ok()) << session.status();
  absl::Status failed = absl::OkStatus();
  for (int i = 0; i < 4 && failed.ok(); ++i) {
    auto r = t->TryStep();
    if (!r.ok()) {
      failed = r.status();
      break;
    }
    auto stop = (*session)->AfterStep(*t);
    if (!stop.ok()) failed = stop.status();
  }
  ASSERT_FALSE(failed.ok());
  EXPECT_TRUE(absl::StrContains(failed.message(), "non-finite") ||
              absl::StrContains(failed.message(), "holds"))
      << failed;
  auto list = ListCheckpoints(ckpt);
  EXPECT_TRUE(!list.ok() || list->empty()) << "a checkpoint was written";

  JobSpec sane = GuardJob(ckpt);
  auto fresh = MakeTrainer(sane);
  auto resumed = ResumeTraining(*fresh, "auto", ckpt);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_FALSE(resumed->restored);
  EXPECT_TRUE(fresh->TryStep().ok());
}

TEST(NonFiniteGuard, SaveRefusesNonFiniteAndAutoResumeSkipsACheckpointHoldingOne) {
  ScratchDir dir;
  const std::string ckpt = dir.Sub("ckpt");
  auto t = MakeTrainer(GuardJob(ckpt));
  auto session = CheckpointSession::Start(*t);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE(t->TryStep().ok());
  ASSERT_TRUE((*session)->AfterStep(*t).ok());  // step_00000001, finite
  ASSERT_TRUE(t->TryStep().ok());
  const ParamInfo& emb = t->layout().Get("embedding");
  t->params()[emb.offset + 3] = kNan;
  auto refused = (*session)->AfterStep(*t);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "not saving a checkpoint at step 2"))
      << refused.status();
  EXPECT_EQ(ListCheckpoints(ckpt)->size(), 1u);

  // A checkpoint holding a NaN anyway (an older writer, a hand edit): written around the guard.
  auto save = CheckpointSave::Start(*t, ckpt, /*keep_last=*/5, /*background=*/false);
  ASSERT_TRUE(save.ok()) << save.status();
  ASSERT_TRUE((*save)->Finish().ok());
  ASSERT_EQ(ListCheckpoints(ckpt)->front().step, 2);

  auto next = MakeTrainer(GuardJob(ckpt));
  auto resumed = ResumeTraining(*next, "auto", ckpt);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->step, 1);
  ASSERT_EQ(resumed->warnings.size(), 1u);
  EXPECT_TRUE(absl::StrContains(resumed->warnings[0], "step_00000002")) << resumed->warnings[0];
  EXPECT_TRUE(absl::StrContains(resumed->warnings[0], "parameter embedding holds nan at index 3"))
      << resumed->warnings[0];
  EXPECT_TRUE(next->CheckParamsFinite().ok());
}

}  // namespace
}  // namespace openmoe
