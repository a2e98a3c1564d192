// The paper's routing proposals in the trainer: router.freeze_after_steps leaves the router and
// its optimizer state unchanged while everything else trains; router.token_id_routing_after_steps
// counts the router's decisions (checked against a recount of a run without the option), then
// routes by the table (no router loss, no router gradient), and the counts survive a checkpoint
// taken before or after the switch. Plus the job loader's verdict on the new fields.
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "launch/checkpoint/restore.h"
#include "launch/checkpoint/writer.h"
#include "launch/job_loader.h"
#include "model/adafactor.h"
#include "model/adamw.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

using testing::CheckpointJob;
using testing::MakeTrainer;
using testing::SameBits;
using testing::ScratchDir;

std::vector<float> Copy(const Trainer& t, const std::string& name) {
  const ParamInfo& p = t.layout().Get(name);
  Trainer& mut = const_cast<Trainer&>(t);
  return {mut.params().data() + p.offset, mut.params().data() + p.offset + p.size};
}

// The optimizer statistics of a shared parameter, found the way each optimizer documents them.
std::vector<float> StateOf(Trainer& t, const std::string& name) {
  const ParamInfo& p = t.layout().Get(name);
  Optimizer& o = t.optimizer();
  if (o.kind() == OPTIMIZER_ADAMW) {
    auto& adamw = dynamic_cast<AdamW&>(o);
    std::vector<float> out(adamw.m() + p.offset, adamw.m() + p.offset + p.size);
    out.insert(out.end(), adamw.v() + p.offset, adamw.v() + p.offset + p.size);
    return out;
  }
  for (const Adafactor::Slice& s : dynamic_cast<Adafactor&>(o).slices()) {
    if (s.param_offset != p.offset) continue;
    const int64_t n = s.factored ? s.rows + s.cols : s.rows * s.cols;
    return {o.state().data() + s.state_offset, o.state().data() + s.state_offset + n};
  }
  ADD_FAILURE() << "no state for " << name;
  return {};
}

class FreezeTest : public ::testing::TestWithParam<OptimizerKind> {};

TEST_P(FreezeTest, RouterStopsChangingOtherWeightsDoNot) {
  JobSpec spec = CheckpointJob(4, 1, 1);
  spec.mutable_train()->set_optimizer(GetParam());
  spec.mutable_router()->set_freeze_after_steps(2);
  const std::string router = "layers.1.moe.router";
  auto trainer = MakeTrainer(spec);
  const std::vector<float> r0 = Copy(*trainer, router);
  trainer->Step();
  trainer->Step();
  const std::vector<float> r2 = Copy(*trainer, router), s2 = StateOf(*trainer, router);
  const std::vector<float> e2 = Copy(*trainer, "layers.1.moe.experts.wi_0"),
                           a2 = Copy(*trainer, "layers.0.attn.wq");
  EXPECT_NE(r0, r2) << "the router trained before the freeze";
  EXPECT_TRUE(trainer->RouterFrozen());
  trainer->Step();
  trainer->Step();
  EXPECT_EQ(Copy(*trainer, router), r2);
  EXPECT_EQ(StateOf(*trainer, router), s2);
  EXPECT_NE(Copy(*trainer, "layers.1.moe.experts.wi_0"), e2);
  EXPECT_NE(Copy(*trainer, "layers.0.attn.wq"), a2);
}

INSTANTIATE_TEST_SUITE_P(Optimizers, FreezeTest,
                         ::testing::Values(OPTIMIZER_ADAFACTOR, OPTIMIZER_ADAMW));

JobSpec TokenIdJob(int64_t switch_step) {
  JobSpec spec = CheckpointJob(4, 1, 1);
  spec.mutable_router()->set_token_id_routing_after_steps(switch_step);
  return spec;
}

// Counts (layer, id, expert) of the router's top-k choices over `steps` steps, recounted from a
// run without the option: `reader` yields the same batches as `plain` trains on.
std::map<std::vector<int64_t>, int64_t> Recount(const JobSpec& with_option, int steps) {
  JobSpec plain_spec = with_option;
  plain_spec.mutable_router()->clear_token_id_routing_after_steps();
  auto plain = MakeTrainer(plain_spec), reader = MakeTrainer(plain_spec);
  std::map<std::vector<int64_t>, int64_t> counts;
  for (int s = 0; s < steps; ++s) {
    const Batch batch = reader->NextLocalBatch().value();
    plain->Step();
    const Routing& r = *plain->last_routing(1);
    for (int64_t t = 0; t < r.num_tokens; ++t)
      for (int64_t j = 0; j < r.top_k; ++j)
        ++counts[{1, batch.tokens[t], r.choice_expert[t * r.top_k + j]}];
  }
  return counts;
}

TEST(TokenIdRoutingTrainer, CountsAreTheRoutersDecisionsThenRoutingIsTheTable) {
  const JobSpec spec = TokenIdJob(2);
  auto trainer = MakeTrainer(spec);
  trainer->Step();
  trainer->Step();
  ASSERT_NE(trainer->token_id_tables(), nullptr);
  EXPECT_FALSE(trainer->token_id_tables()->built());
  const StepResult third = trainer->Step();  // step index 2: the switch
  const TokenIdTables& tables = *trainer->token_id_tables();
  ASSERT_TRUE(tables.built());
  EXPECT_TRUE(trainer->RouterFrozen());
  EXPECT_EQ(third.sums.router[1].load_balance, 0.0);
  EXPECT_EQ(third.sums.router[1].z_loss, 0.0);

  // The statistics are the router's decisions of steps 0 and 1, recounted independently.
  const std::map<std::vector<int64_t>, int64_t> want = Recount(spec, 2);
  const int64_t v = tables.vocab(), e_count = tables.num_experts(), width = 1 + 2 * e_count;
  int64_t mismatches = 0, occurrences = 0;
  for (int64_t id = 0; id < v; ++id) {
    const int64_t* row = tables.stats().data() + id * width;
    occurrences += row[0];
    for (int64_t e = 0; e < e_count; ++e) {
      auto it = want.find({1, id, e});
      mismatches += row[1 + e] != (it == want.end() ? 0 : it->second);
    }
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(occurrences, 2 * 128 * 8);  // every token of two steps, once

  // After the switch, routing equals the table and the router gets no gradient.
  const Batch batch = trainer->NextLocalBatch().value();
  trainer->ComputeGradients(batch);
  const Routing& r = *trainer->last_routing(1);
  ASSERT_TRUE(r.from_table);
  int64_t off_table = 0;
  for (int64_t t = 0; t < r.num_tokens; ++t)
    for (int64_t j = 0; j < r.top_k; ++j)
      off_table += r.choice_expert[t * r.top_k + j] != tables.Experts(1, batch.tokens[t])[j];
  EXPECT_EQ(off_table, 0);
  const ParamInfo& router = trainer->layout().Get("layers.1.moe.router");
  for (int64_t i = 0; i < router.size; ++i) ASSERT_EQ(trainer->grads()[router.offset + i], 0.0f);
}

// Resuming from a checkpoint taken before the switch (counts half done) or after it (table in
// use) gives the uninterrupted run's statistics, table, parameters and losses, bit for bit.
void ExpectResumeExact(int save_after) {
  const JobSpec spec = TokenIdJob(2);
  auto reference = MakeTrainer(spec);
  std::vector<double> losses;
  for (int i = 0; i < 4; ++i) losses.push_back(reference->Step().loss);

  ScratchDir dir;
  auto first = MakeTrainer(spec);
  for (int i = 0; i < save_after; ++i) first->Step();
  ASSERT_TRUE(SaveCheckpoint(*first, dir.path(), 2).ok());
  first.reset();
  auto resumed = MakeTrainer(spec);
  auto outcome = ResumeTraining(*resumed, "auto", dir.path());
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_TRUE(outcome->warnings.empty());
  for (int i = save_after; i < 4; ++i) EXPECT_EQ(resumed->Step().loss, losses[i]) << "step " << i;
  const TokenIdTables& want = *reference->token_id_tables();
  const TokenIdTables& got = *resumed->token_id_tables();
  ASSERT_TRUE(got.built());
  EXPECT_EQ(got.stats(), want.stats());
  for (int32_t id = 0; id < want.vocab(); ++id) {
    for (int64_t j = 0; j < want.top_k(); ++j)
      ASSERT_EQ(got.Experts(1, id)[j], want.Experts(1, id)[j]) << "id " << id;
  }
  EXPECT_TRUE(
      SameBits(resumed->params().data(), reference->params().data(), reference->params().size()));
}

TEST(TokenIdRoutingTrainer, ResumeBeforeTheSwitchIsExact) { ExpectResumeExact(1); }
TEST(TokenIdRoutingTrainer, ResumeAfterTheSwitchIsExact) { ExpectResumeExact(3); }

// A job without the option loads such a checkpoint (the counts are not model weights).
TEST(TokenIdRoutingTrainer, CheckpointLoadsIntoAJobWithoutTheOption) {
  ScratchDir dir;
  auto first = MakeTrainer(TokenIdJob(1));
  first->Step();
  ASSERT_TRUE(SaveCheckpoint(*first, dir.path(), 1).ok());
  auto plain = MakeTrainer(CheckpointJob(4, 1, 1));
  auto outcome = ResumeTraining(*plain, "auto", dir.path());
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_TRUE(SameBits(plain->params().data(), first->params().data(), first->params().size()));
}

TEST(RoutingOptionsJob, OverlapIsRejectedNamingTheCostModelField) {
  JobSpec spec = CheckpointJob(4, 1, 1);
  spec.mutable_train()->set_overlap_attention_all_to_all(true);
  const absl::Status status = ValidateJob(spec, "job.pbtxt");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("train.overlap_attention_all_to_all"), std::string::npos);
  EXPECT_NE(status.message().find("cost_model.overlap_all_to_all_with_attention"),
            std::string::npos);
  EXPECT_EQ(std::string(status.message()).find('\n'), std::string::npos);
}

TEST(RoutingOptionsJob, NegativeStepsAreRejected) {
  for (const char* field : {"freeze_after_steps", "token_id_routing_after_steps"}) {
    JobSpec spec = CheckpointJob(4, 1, 1);
    if (std::string(field) == "freeze_after_steps") {
      spec.mutable_router()->set_freeze_after_steps(-1);
    } else {
      spec.mutable_router()->set_token_id_routing_after_steps(-1);
    }
    const absl::Status status = ValidateJob(spec, "job.pbtxt");
    ASSERT_FALSE(status.ok()) << field;
    EXPECT_NE(status.message().find(std::string("router.") + field), std::string::npos);
  }
  JobSpec fine = CheckpointJob(4, 1, 1);
  fine.mutable_router()->set_freeze_after_steps(3);
  fine.mutable_router()->set_token_id_routing_after_steps(5);
  fine.mutable_router()->set_ignore_padding_tokens(true);
  EXPECT_TRUE(ValidateJob(fine, "job.pbtxt").ok());
}

}  // namespace
}  // namespace openmoe
