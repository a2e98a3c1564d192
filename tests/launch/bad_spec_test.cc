// Bad job specs end `openmoe train` / `openmoe plan` with exit 1 and exactly one stderr line
// "openmoe: ..." naming the field at fault; never with a signal (an abort's 134, a SIGFPE, the
// kernel's OOM kill), and never by silently training something else (an inf capacity factor
// collapsing to min_capacity, an empty file running the defaults). Each case runs the binary.
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/launch/checkpoint_test_util.h"
#include "tests/launch/bounded_run.h"

namespace openmoe {
namespace {

using testing::RunResult;
using testing::RunBounded;
using testing::ScratchDir;

std::string TinyJob() { return std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt"; }

struct BadSpec {
  const char* name;
  std::vector<std::string> sets;  // --set overrides of tiny.pbtxt
  const char* expect;             // a substring of the one error line
};

// The known failures first (each once aborted with rc 134, was accepted, or trained wrongly), then
// negative / NaN / inf floats and zero / huge sizes.
const BadSpec kBadSpecs[] = {
    {"capacity_factor_inf", {"router.capacity_factor=inf"}, "router.capacity_factor=inf"},
    // An integer field does not take an exponent: a parse error naming the --set.
    {"d_model_4e12", {"model.d_model=4e12"}, "--set model.d_model=4e12: Expected integer"},
    {"vocab_9e18", {"model.vocab_size=9e18"}, "--set model.vocab_size=9e18: Expected integer"},
    {"batch_rows_4e18", {"train.batch_rows=4e18"}, "--set train.batch_rows=4e18: Expected integer"},
    {"d_model_4000000000000", {"model.d_model=4000000000000"},
     "model.d_model=4000000000000 must be <= 2147483647"},
    {"vocab_9000000000000000000", {"model.vocab_size=9000000000000000000"},
     "model.vocab_size=9000000000000000000 must be <= 2147483647"},
    {"batch_rows_4000000000000000000", {"train.batch_rows=4000000000000000000"},
     "train.batch_rows=4000000000000000000 must be <= 2147483647"},
    {"tokens_per_chip_int32", {"train.batch_rows=2147483644"},
     "tokens per chip per microbatch"},
    {"seq_len_2p31", {"train.seq_len=2147483648"}, "train.seq_len=2147483648"},
    {"heads_times_head_dim", {"model.num_heads=100000000", "model.head_dim=100000000"},
     "model.num_heads=100000000 * model.head_dim=100000000"},
    {"d_ff_and_min_capacity",
     {"model.d_ff=2147483647", "router.min_capacity=2147483648"},
     "router.min_capacity=2147483648"},
    {"peak_lr_inf", {"schedule.peak_learning_rate=inf"}, "schedule.peak_learning_rate=inf"},
    {"peak_lr_nan", {"schedule.peak_learning_rate=nan"}, "schedule.peak_learning_rate=nan"},
    {"peak_lr_negative", {"schedule.peak_learning_rate=-1"}, "schedule.peak_learning_rate=-1"},
    {"capacity_factor_nan", {"router.capacity_factor=nan"}, "router.capacity_factor=nan"},
    {"capacity_factor_negative", {"router.capacity_factor=-1"}, "router.capacity_factor=-1"},
    {"capacity_factor_1e300", {"router.capacity_factor=1e300"}, "expert capacity"},
    {"eval_capacity_factor_neg_inf", {"router.eval_capacity_factor=-inf"},
     "router.eval_capacity_factor=-inf"},
    {"rms_norm_eps_negative", {"model.rms_norm_eps=-1"}, "model.rms_norm_eps=-1"},
    {"rms_norm_eps_below_float", {"model.rms_norm_eps=1e-300"}, "model.rms_norm_eps"},
    {"rope_base_1e308", {"model.rope_base=1e308"}, "model.rope_base"},
    {"jitter_inf", {"router.jitter_noise=inf"}, "router.jitter_noise=inf"},
    {"aux_loss_nan", {"router.aux_loss_weight=nan"}, "router.aux_loss_weight=nan"},
    {"output_z_inf", {"loss.output_z_loss_weight=inf"}, "loss.output_z_loss_weight=inf"},
    {"optimizer_epsilon_inf", {"optimizer.epsilon1=inf"}, "optimizer.epsilon1=inf"},
    {"adamw_beta_nan", {"adamw.beta1=nan"}, "adamw.beta1=nan"},
    {"cost_model_bandwidth_inf", {"cost_model.hbm_bandwidth=inf"}, "cost_model.hbm_bandwidth=inf"},
    {"cost_model_flops_nan", {"cost_model.peak_flops_per_chip=nan"},
     "cost_model.peak_flops_per_chip=nan"},
    {"d_model_zero", {"model.d_model=0"}, "model.d_model=0"},
    {"seq_len_zero", {"train.seq_len=0"}, "train.seq_len=0"},
    {"batch_rows_negative", {"train.batch_rows=-1"}, "train.batch_rows=-1"},
    {"experts_huge", {"model.num_experts=9223372036854775807"}, "model.num_experts="},
    {"layers_huge", {"model.num_layers=2147483648"}, "model.num_layers=2147483648"},
    {"shared_experts_negative", {"model.num_shared_experts=-1"},
     "model.num_shared_experts=-1 must be >= 0"},
    {"shared_experts_dense", {"model.num_experts=0", "model.num_shared_experts=1"},
     "model.num_shared_experts=1 needs MoE layers"},
    {"shared_experts_huge", {"model.num_shared_experts=2147483647"},
     "the shared experts' hidden size"},
    {"threads_huge", {"train.threads=4294967297"}, "train.threads=4294967297"},
    {"chips_huge", {"topology.num_chips=9223372036854775807"}, "topology.num_chips="},
    {"microbatches_huge", {"train.microbatches=4294967296"}, "train.microbatches=4294967296"},
    {"grad_bucket_zero", {"train.grad_bucket_mb=0"}, "train.grad_bucket_mb=0"},
    {"grad_bucket_negative", {"train.grad_bucket_mb=-25"}, "train.grad_bucket_mb=-25"},
    {"grad_bucket_nan", {"train.grad_bucket_mb=nan"}, "train.grad_bucket_mb=nan"},
    {"grad_bucket_inf", {"train.grad_bucket_mb=inf"}, "train.grad_bucket_mb=inf"},
    {"exchange_chunks_zero", {"train.expert_exchange_chunks=0"},
     "train.expert_exchange_chunks=0 must be >= 1"},
    {"exchange_chunks_negative", {"train.expert_exchange_chunks=-3"},
     "train.expert_exchange_chunks=-3"},
    {"params_overflow_int64",
     {"model.vocab_size=2000000000", "model.d_model=2000000000", "model.d_ff=1000000000"},
     "overflows int64"},
    // Fits every int32 / int64 bound but not this machine's memory (4e9 * 4 bytes x 3 or more).
    {"needs_more_memory", {"model.vocab_size=2000000000", "model.vocab_pad_multiple=1"},
     "GiB per rank"},
};

// Exactly one line on stderr, starting with "openmoe:", exit 1, no signal, no timeout.
void ExpectOneLineError(const RunResult& r, const std::string& expect) {
  ASSERT_FALSE(r.timed_out) << r.Describe();
  ASSERT_EQ(r.signal, 0) << r.Describe();
  ASSERT_TRUE(r.exited) << r.Describe();
  EXPECT_LT(r.exit_code, 128) << r.Describe();
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  const std::vector<std::string> lines = r.ErrLines();
  ASSERT_EQ(lines.size(), 1u) << r.Describe();
  EXPECT_TRUE(absl::StartsWith(lines[0], "openmoe:")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[0], expect)) << "want \"" << expect << "\" in: " << lines[0];
}

std::vector<std::string> WithSets(std::vector<std::string> args, const BadSpec& spec) {
  for (const std::string& s : spec.sets) {
    args.push_back("--set");
    args.push_back(s);
  }
  return args;
}

// Every case through `openmoe train` and `openmoe plan` (plan allocates nothing: a job too large
// for this machine's memory is still a valid plan), several at a time.
TEST(BadSpecTest, EveryBadSpecFailsWithOneLineNamingTheField) {
  std::vector<std::vector<std::string>> runs;
  for (const BadSpec& spec : kBadSpecs) {
    runs.push_back(WithSets({"train", "--job", TinyJob(), "--set", "train.steps=1"}, spec));
    runs.push_back(WithSets({"plan", "--job", TinyJob()}, spec));
  }
  const std::vector<RunResult> results = testing::RunBoundedAll(runs, {});
  for (size_t i = 0; i < std::size(kBadSpecs); ++i) {
    const BadSpec& spec = kBadSpecs[i];
    {
      SCOPED_TRACE(std::string("train ") + spec.name);
      ExpectOneLineError(results[2 * i], spec.expect);
    }
    SCOPED_TRACE(std::string("plan ") + spec.name);
    if (absl::StrContains(spec.expect, "GiB per rank")) {
      EXPECT_EQ(results[2 * i + 1].exit_code, 0) << results[2 * i + 1].Describe();
    } else {
      ExpectOneLineError(results[2 * i + 1], spec.expect);
    }
  }
}

TEST(BadSpecFiles, EmptyAndCommentOnlyFilesAreErrorsNamingThem) {
  ScratchDir dir;
  const std::string empty = dir.Sub("empty.pbtxt");
  const std::string comments = dir.Sub("comments.pbtxt");
  const std::string empty_messages = dir.Sub("empty_messages.pbtxt");
  std::ofstream(empty) << "";
  std::ofstream(comments) << "# only a comment\n\n   \n# and another\n";
  std::ofstream(empty_messages) << "model { }\ntrain { }\n";
  for (const std::string& file : {empty, comments, empty_messages}) {
    for (const char* sub : {"train", "plan"}) {
      SCOPED_TRACE(std::string(sub) + " " + file);
      ExpectOneLineError(RunBounded({sub, "--job", file}), file + ": sets no field");
    }
  }
  // As an overlay on a real job, too.
  ExpectOneLineError(RunBounded({"plan", "--job", TinyJob(), "--job", comments}),
                     comments + ": sets no field");
}

TEST(BadSpecFiles, AllowDefaultsAcceptsAnEmptyFile) {
  ScratchDir dir;
  const std::string empty = dir.Sub("empty.pbtxt");
  std::ofstream(empty) << "# nothing\n";
  const RunResult plan = RunBounded({"plan", "--job", empty, "--allow_defaults"});
  EXPECT_EQ(plan.exit_code, 0) << plan.Describe();
  // The plan of the defaults (model.name "custom", proto/job.proto).
  EXPECT_TRUE(absl::StrContains(plan.out, "custom")) << plan.out;
  testing::RunLimits limits;
  limits.cwd = dir.path();
  const RunResult train = RunBounded(
      {"train", "--job", empty, "--allow_defaults", "--set", "train.steps=1"}, limits);
  EXPECT_EQ(train.exit_code, 0) << train.Describe();
  EXPECT_TRUE(absl::StrContains(train.out, "custom")) << train.out;
}

TEST(BadSpecFiles, MissingFileIsOneLine) {
  ScratchDir dir;
  const std::string missing = dir.Sub("no_such_job.pbtxt");
  ExpectOneLineError(RunBounded({"train", "--job", missing}), missing);
  ExpectOneLineError(RunBounded({"plan", "--job", missing}), missing);
}

TEST(BadSpecFiles, NoJobFlagIsAnError) {
  const RunResult r = RunBounded({"train"});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_TRUE(absl::StartsWith(r.err, "openmoe: 'openmoe train' needs --job")) << r.err;
}

TEST(BadSpecFiles, InfCapacityFactorInAFileIsRejected) {
  // The file route, not --set: the text parser reads "inf" for a double too.
  ScratchDir dir;
  const std::string overlay = dir.Sub("inf.pbtxt");
  std::ofstream(overlay) << "router { capacity_factor: inf }\n";
  ExpectOneLineError(RunBounded({"train", "--job", TinyJob(), "--job", overlay}),
                     "router.capacity_factor=inf");
}

}  // namespace
}  // namespace openmoe
