// The optimizer options end to end: validation of the AdamW / schedule / jitter fields; an AdamW +
// jitter + cosine run resumes bit for bit and reshards across expert-parallel sizes (m and v by
// name and global expert id); a checkpoint of one optimizer does not load into the other.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "launch/checkpoint/index.h"
#include "launch/checkpoint/reader.h"
#include "launch/checkpoint/restore.h"
#include "launch/checkpoint/writer.h"
#include "launch/job_loader.h"
#include "model/adamw.h"
#include "model/param_count.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

using testing::CheckpointJob;
using testing::MakeTrainer;
using testing::SameBits;
using testing::ScratchDir;

JobSpec AdamWJob(int64_t experts, int64_t chips, int64_t ep) {
  JobSpec spec = CheckpointJob(experts, chips, ep);
  spec.mutable_train()->set_optimizer(OPTIMIZER_ADAMW);
  spec.mutable_train()->set_steps(8);
  spec.mutable_adamw()->set_weight_decay(0.1);
  spec.mutable_optimizer()->set_global_norm_clip(1.0);
  spec.mutable_schedule()->set_kind(SCHEDULE_WARMUP_COSINE);
  spec.mutable_schedule()->set_warmup_steps(2);
  spec.mutable_schedule()->set_peak_learning_rate(3e-3);
  spec.mutable_router()->set_jitter_noise(0.05);
  return spec;
}

std::string Record(const StepResult& r) {
  return absl::StrFormat("step %d loss %a lr %a norm %a", r.step, r.loss, r.learning_rate,
                         r.grad_norm);
}

// One-line error naming the field.
void ExpectInvalid(const JobSpec& spec, const std::string& field) {
  const absl::Status s = ValidateJob(spec, "job.pbtxt");
  EXPECT_FALSE(s.ok()) << field;
  EXPECT_NE(s.message().find(field), std::string::npos) << s;
  EXPECT_EQ(s.message().find('\n'), std::string::npos) << s;
}

TEST(OptimizerOptions, ValidationNamesTheField) {
  const JobSpec good = AdamWJob(4, 1, 1);
  ASSERT_TRUE(ValidateJob(good, "job.pbtxt").ok()) << ValidateJob(good, "job.pbtxt");
  JobSpec s = good;
  s.mutable_adamw()->set_beta1(1.0);
  ExpectInvalid(s, "adamw.beta1");
  s = good;
  s.mutable_adamw()->set_beta2(-0.1);
  ExpectInvalid(s, "adamw.beta2");
  s = good;
  s.mutable_adamw()->set_epsilon(0);
  ExpectInvalid(s, "adamw.epsilon");
  s = good;
  s.mutable_adamw()->set_weight_decay(-1);
  ExpectInvalid(s, "adamw.weight_decay");
  s = good;
  s.mutable_schedule()->set_final_learning_rate_fraction(1.5);
  ExpectInvalid(s, "schedule.final_learning_rate_fraction");
  s = good;
  s.mutable_schedule()->set_warmup_steps(9);  // > train.steps 8 (decay_steps 0)
  ExpectInvalid(s, "schedule.warmup_steps");
  s = good;
  s.mutable_schedule()->set_decay_steps(5);
  s.mutable_schedule()->set_warmup_steps(6);
  ExpectInvalid(s, "schedule.warmup_steps");
  s = good;
  s.mutable_router()->set_jitter_noise(1.0);
  ExpectInvalid(s, "router.jitter_noise");
}

TEST(OptimizerOptions, AdamWStateHasTheParameterLayoutAndMoves) {
  auto trainer = MakeTrainer(AdamWJob(4, 1, 1));
  EXPECT_EQ(trainer->optimizer().kind(), OPTIMIZER_ADAMW);
  EXPECT_EQ(trainer->optimizer().state().size(), 2 * trainer->layout().total_size());
  trainer->Step();
  const ParamInfo& wq = trainer->layout().Get("layers.0.attn.wq");
  const float* v = trainer->optimizer().state().data() + trainer->layout().total_size();
  // After one step v = (1 - beta2) g^2 with the clipped gradient: positive where g is nonzero.
  EXPECT_GT(v[wq.offset], 0.0f);
}

TEST(OptimizerOptions, AdamWWithJitterResumesBitForBit) {
  const JobSpec spec = AdamWJob(8, 8, 4);
  const int n = 2;
  ScratchDir dir;
  auto reference = MakeTrainer(spec);
  std::vector<std::string> want;
  for (int i = 0; i < 2 * n; ++i) want.push_back(Record(reference->Step()));
  auto first = MakeTrainer(spec);
  for (int i = 0; i < n; ++i) ASSERT_EQ(Record(first->Step()), want[i]);
  auto saved = SaveCheckpoint(*first, dir.path(), 3);
  ASSERT_TRUE(saved.ok()) << saved.status();
  first.reset();
  auto resumed = MakeTrainer(spec);
  auto outcome = RestoreCheckpoint(*resumed, saved->path);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  for (int i = n; i < 2 * n; ++i) EXPECT_EQ(Record(resumed->Step()), want[i]);
  EXPECT_TRUE(
      SameBits(resumed->params().data(), reference->params().data(), reference->params().size()));
  EXPECT_TRUE(SameBits(resumed->optimizer().state().data(), reference->optimizer().state().data(),
                       reference->optimizer().state().size()));
}

TEST(OptimizerOptions, AdamWCheckpointReshardsAcrossExpertParallelSizes) {
  ScratchDir dir;
  auto writer = MakeTrainer(AdamWJob(8, 8, 8));
  for (int i = 0; i < 2; ++i) writer->Step();
  auto saved = SaveCheckpoint(*writer, dir.path(), 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  auto reader = CheckpointReader::Open(saved->path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  int adamw_entries = 0;
  for (const TensorEntry& e : reader->manifest().tensors())
    adamw_entries += e.kind() == TENSOR_ADAMW_M || e.kind() == TENSOR_ADAMW_V;
  EXPECT_GT(adamw_entries, 0);
  const double want = writer->Step().loss;
  for (const JobSpec& spec : {AdamWJob(8, 1, 1), AdamWJob(8, 8, 2), AdamWJob(8, 4, 4)}) {
    const std::string where = absl::StrFormat("chips=%d ep=%d", spec.topology().num_chips(),
                                              spec.mesh().expert_parallel());
    auto loaded = MakeTrainer(spec);
    auto outcome = RestoreCheckpoint(*loaded, saved->path);
    ASSERT_TRUE(outcome.ok()) << where << ": " << outcome.status();
    int checked = 0;
    for (const LocalTensor& t : LocalTensors(loaded->layout(), &loaded->optimizer())) {
      if (t.kind == TENSOR_PARAM) continue;
      std::vector<float> expect(static_cast<size_t>(t.size()));
      ASSERT_TRUE(reader->Read(t, expect.data()).ok());
      EXPECT_TRUE(SameBits(loaded->optimizer().state().data() + t.offset, expect.data(), t.size()))
          << where << " " << TensorKindName(t.kind) << " " << t.name;
      ++checked;
    }
    EXPECT_EQ(checked, 2 * static_cast<int>(loaded->layout().params().size()));
    const double got = loaded->Step().loss;
    EXPECT_NEAR(got, want, 1e-5 * std::fabs(want)) << where;
  }
}

TEST(OptimizerOptions, MemoryEstimateCountsTwiceTheParametersForAdamW) {
  JobSpec spec = AdamWJob(8, 8, 4);
  const ParamLayout layout(DimsFromSpec(spec));
  const ChipMemory adamw = MemoryPerChip(layout, spec, 4);
  // Per chip: every shared parameter and 2 of the 8 experts of each expert tensor.
  int64_t held = 0;
  for (const ParamInfo& p : layout.params()) held += p.is_expert ? p.size / 4 : p.size;
  EXPECT_EQ(adamw.params, held);
  EXPECT_EQ(adamw.optimizer_bytes, 2 * 4 * held);
  EXPECT_EQ(adamw.total_bytes, 4 * 4 * held);
  spec.mutable_train()->set_optimizer(OPTIMIZER_ADAFACTOR);
  EXPECT_EQ(MemoryPerChip(layout, spec, 4).optimizer_bytes,
            MemoryPerChip(layout, spec.optimizer(), 4).optimizer_bytes);
}

TEST(OptimizerOptions, CheckpointOfTheOtherOptimizerFailsNamingTensorAndField) {
  ScratchDir dir;
  JobSpec adafactor = CheckpointJob(4, 1, 1);
  auto writer = MakeTrainer(adafactor);
  writer->Step();
  auto saved = SaveCheckpoint(*writer, dir.path(), 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  JobSpec adamw = adafactor;
  adamw.mutable_train()->set_optimizer(OPTIMIZER_ADAMW);
  auto loaded = MakeTrainer(adamw);
  auto outcome = RestoreCheckpoint(*loaded, saved->path);
  ASSERT_FALSE(outcome.ok());
  const std::string message(outcome.status().message());
  EXPECT_NE(message.find("adafactor state"), std::string::npos) << message;
  EXPECT_NE(message.find("train.optimizer is OPTIMIZER_ADAMW"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos);

  // And the other way round.
  ScratchDir dir2;
  auto adamw_writer = MakeTrainer(adamw);
  adamw_writer->Step();
  auto saved2 = SaveCheckpoint(*adamw_writer, dir2.path(), 1);
  ASSERT_TRUE(saved2.ok()) << saved2.status();
  auto back = MakeTrainer(adafactor);
  auto outcome2 = RestoreCheckpoint(*back, saved2->path);
  ASSERT_FALSE(outcome2.ok());
  EXPECT_NE(outcome2.status().message().find("adamw m"), std::string::npos) << outcome2.status();
  EXPECT_NE(outcome2.status().message().find("OPTIMIZER_ADAFACTOR"), std::string::npos);
}

}  // namespace
}  // namespace openmoe
