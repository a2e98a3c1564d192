#include "launch/job_loader.h"

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

namespace openmoe {
namespace {

// A valid small MoE job: 4 chips (2x2), one expert per chip, one 128-token group per chip.
constexpr char kBaseJob[] = R"pb(
  model {
    vocab_size: 512
    num_layers: 4
    d_model: 64
    num_heads: 4
    head_dim: 16
    d_ff: 128
    num_experts: 4
    moe_interval: 2
  }
  router { top_k: 2 group_size: 128 }
  topology { num_chips: 4 torus_x: 2 torus_y: 2 chips_per_host: 4 }
  mesh { expert_parallel: 4 }
  train { batch_rows: 8 seq_len: 64 microbatches: 1 steps: 10 }
)pb";

class JobLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "job_loader_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  static JobSpec Base() {
    JobSpec spec;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(kBaseJob, &spec));
    return spec;
  }
  std::string dir_;
};

TEST_F(JobLoaderTest, BaseJobIsValid) { EXPECT_TRUE(ValidateJob(Base(), "base").ok()); }

TEST_F(JobLoaderTest, LaterFileWinsAndOnlyOverwritesFieldsItSets) {
  const std::string a = Write("a.pbtxt", kBaseJob);
  const std::string b = Write("b.pbtxt", "model { d_model: 96 }\ntrain { steps: 20 }\n");
  auto spec = LoadJob({a, b}, {});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model().d_model(), 96);     // b wins
  EXPECT_EQ(spec->model().num_layers(), 4);   // from a, untouched by b's model { }
  EXPECT_EQ(spec->model().num_experts(), 4);  // from a
  EXPECT_EQ(spec->train().steps(), 20);
  EXPECT_EQ(spec->train().batch_rows(), 8);

  auto reversed = LoadJob({b, a}, {});
  ASSERT_TRUE(reversed.ok()) << reversed.status();
  EXPECT_EQ(reversed->model().d_model(), 64);  // a wins now
  EXPECT_EQ(reversed->train().steps(), 10);
}

TEST_F(JobLoaderTest, SetOverridesFilesOnNestedFieldsOfEveryType) {
  const std::string a = Write("a.pbtxt", kBaseJob);
  auto spec = LoadJob({a}, {"train.steps=7",                    // int64
                            "router.capacity_factor=1.5",       // double
                            "model.extra_dense_ffn=false",      // bool
                            "model.ffn_form=FFN_SWIGLU",        // enum by name
                            "router.drop_policy=1",             // enum by number
                            "checkpoint.dir=/tmp/a dir \"q\"",  // string, taken literally
                            "model.name=x=y",                   // '=' inside the value
                            "data.synthetic.seed=99",           // three levels, uint64
                            "train.steps=8"});                  // later --set wins
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->train().steps(), 8);
  EXPECT_DOUBLE_EQ(spec->router().capacity_factor(), 1.5);
  EXPECT_FALSE(spec->model().extra_dense_ffn());
  EXPECT_EQ(spec->model().ffn_form(), FFN_SWIGLU);
  EXPECT_EQ(spec->router().drop_policy(), DROP_PROBABILITY_ORDER);
  EXPECT_EQ(spec->checkpoint().dir(), "/tmp/a dir \"q\"");
  EXPECT_EQ(spec->model().name(), "x=y");
  EXPECT_EQ(spec->data().synthetic().seed(), 99u);
  EXPECT_EQ(spec->model().d_model(), 64);  // untouched
}

TEST_F(JobLoaderTest, UnknownFieldInFileNamesFileLineAndField) {
  const std::string a = Write("a.pbtxt", kBaseJob);
  const std::string bad = Write("bad.pbtxt", "# comment\nmodel {\n  foo: 3\n}\n");
  auto spec = LoadJob({a, bad}, {});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(spec.status().message());
  EXPECT_EQ(msg.rfind(bad + ":3:", 0), 0u) << msg;
  EXPECT_NE(msg.find("\"foo\""), std::string::npos) << msg;
}

TEST_F(JobLoaderTest, SyntaxAndTypeErrorsInFileNameTheFile) {
  const std::string bad_type = Write("t.pbtxt", "train {\n  steps: \"many\"\n}\n");
  auto spec = LoadJob({bad_type}, {});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(std::string(spec.status().message()).rfind(bad_type + ":2:", 0), 0u) << spec.status();
  const std::string dup = Write("d.pbtxt", "train { steps: 1 steps: 2 }\n");
  auto dup_spec = LoadJob({dup}, {});
  ASSERT_FALSE(dup_spec.ok());
  EXPECT_NE(dup_spec.status().message().find(dup + ":1:"), std::string::npos);
}

TEST_F(JobLoaderTest, MissingFileIsNotFoundNamingTheFile) {
  const std::string missing = dir_ + "/nope.pbtxt";
  auto spec = LoadJob({missing}, {});
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(spec.status().message().find(missing), std::string::npos);
}

TEST_F(JobLoaderTest, UnknownSetPathNamesThePath) {
  JobSpec spec = Base();
  absl::Status s = ApplySet("model.foo=1", &spec);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--set model.foo"), std::string::npos) << s;
  EXPECT_NE(s.message().find("\"foo\""), std::string::npos) << s;

  s = ApplySet("modle.d_model=1", &spec);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--set modle.d_model"), std::string::npos) << s;

  s = ApplySet("model.d_model.x=1", &spec);  // d_model is not a message
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model.d_model is not a message"), std::string::npos) << s;

  s = ApplySet("model=1", &spec);  // a message, not a value
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("is a message"), std::string::npos) << s;

  s = ApplySet("train.steps", &spec);  // no '='
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("field.path=value"), std::string::npos) << s;
}

TEST_F(JobLoaderTest, WrongTypeInSetIsAnErrorNamingThePath) {
  JobSpec spec = Base();
  for (const char* bad : {"train.steps=abc", "train.steps=1.5", "train.steps=", "train.seed=-1",
                          "router.capacity_factor=fast", "model.extra_dense_ffn=maybe",
                          "model.ffn_form=FFN_NOPE", "train.steps=1 seed: 3"}) {
    absl::Status s = ApplySet(bad, &spec);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    const std::string path = std::string(bad).substr(0, std::string(bad).find('='));
    EXPECT_NE(s.message().find("--set " + path), std::string::npos) << bad << ": " << s;
  }
  EXPECT_EQ(spec.train().steps(), 10);  // nothing applied
  EXPECT_EQ(spec.train().seed(), 0u);
  absl::Status s = ApplySet("model.ffn_form=FFN_NOPE", &spec);
  EXPECT_NE(s.message().find("FFN_OPENMOE, FFN_SWIGLU"), std::string::npos) << s;
}

TEST_F(JobLoaderTest, SetErrorsFromLoadJobStopTheLoad) {
  const std::string a = Write("a.pbtxt", kBaseJob);
  auto spec = LoadJob({a}, {"train.nope=1"});
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("--set train.nope"), std::string::npos);
}

// One broken rule at a time on the valid base job: the message names the field(s).
struct RuleCase {
  std::vector<std::string> sets;
  std::string expected;  // substring of the message
};

TEST_F(JobLoaderTest, EachValidationRuleNamesItsFields) {
  const std::vector<RuleCase> cases = {
      {{"model.vocab_size=1"}, "model.vocab_size=1 must be >= 2"},
      {{"model.vocab_pad_multiple=0"}, "model.vocab_pad_multiple=0"},
      {{"model.num_layers=0"}, "model.num_layers=0 must be >= 1"},
      {{"model.d_model=0"}, "model.d_model=0"},
      {{"model.num_heads=0"}, "model.num_heads=0"},
      {{"model.head_dim=0"}, "model.head_dim=0"},
      {{"model.head_dim=15"}, "model.head_dim=15 must be even"},
      {{"model.d_ff=0"}, "model.d_ff=0"},
      {{"model.num_experts=-4"}, "model.num_experts=-4"},
      {{"model.expert_d_ff=-1"}, "model.expert_d_ff=-1"},
      {{"model.rms_norm_eps=0"}, "model.rms_norm_eps=0 must be > 0"},
      {{"model.rope_base=-1"}, "model.rope_base=-1"},
      {{"model.moe_interval=0"}, "model.moe_interval=0 must be >= 1"},
      {{"model.moe_interval=5"}, "model.moe_interval=5 > model.num_layers=4"},
      {{"router.top_k=0"}, "router.top_k=0 must be in [1, model.num_experts=4]"},
      {{"router.top_k=5"}, "router.top_k=5 must be in [1, model.num_experts=4]"},
      {{"router.group_size=0"}, "router.group_size=0 must be >= 1"},
      {{"router.capacity_factor=0"}, "router.capacity_factor=0 must be > 0"},
      {{"router.eval_capacity_factor=-1"}, "router.eval_capacity_factor=-1"},
      {{"router.min_capacity=-1"}, "router.min_capacity=-1"},
      {{"router.aux_loss_weight=-0.5"}, "router.aux_loss_weight=-0.5"},
      {{"router.z_loss_weight=-1"}, "router.z_loss_weight=-1"},
      {{"loss.output_z_loss_weight=-1"}, "loss.output_z_loss_weight=-1"},
      {{"topology.chip="}, "topology.chip is empty"},
      {{"topology.chip=tpu_v4"},
       "topology.chip=\"tpu_v4\" is not a chip the cost model knows (tpu_v3)"},
      {{"topology.num_chips=0"}, "topology.num_chips=0 must be >= 1"},
      {{"topology.num_chips=8"}, "topology.num_chips=8 != topology.torus_x=2 * topology.torus_y=2"},
      {{"topology.torus_x=0"}, "topology.torus_x=0"},
      {{"topology.chips_per_host=0"}, "topology.chips_per_host=0"},
      {{"topology.num_chips=6", "topology.torus_x=2", "topology.torus_y=3",
        "mesh.expert_parallel=2", "model.num_experts=4", "train.batch_rows=12"},
       "topology.num_chips=6 is not divisible by topology.chips_per_host=4"},
      {{"model.num_experts=6"}, "model.num_experts=6 is not divisible by mesh.expert_parallel=4"},
      {{"mesh.expert_parallel=3"},
       "topology.num_chips=4 is not divisible by mesh.expert_parallel=3"},
      {{"mesh.expert_parallel=0"}, "mesh.expert_parallel=0"},
      {{"mesh.model_parallel=0"}, "mesh.model_parallel=0 must be >= 1"},
      {{"mesh.model_parallel=3"}, "model.num_heads=4 is not divisible by mesh.model_parallel=3"},
      {{"optimizer.decay_exponent=0"}, "optimizer.decay_exponent=0"},
      {{"optimizer.epsilon1=0"}, "optimizer.epsilon1=0"},
      {{"optimizer.epsilon2=-1"}, "optimizer.epsilon2=-1"},
      {{"optimizer.clipping_threshold=-1"}, "optimizer.clipping_threshold=-1"},
      {{"optimizer.min_dim_size_to_factor=0"}, "optimizer.min_dim_size_to_factor=0"},
      {{"optimizer.global_norm_clip=-1"}, "optimizer.global_norm_clip=-1"},
      {{"schedule.peak_learning_rate=0"}, "schedule.peak_learning_rate=0 must be > 0"},
      {{"schedule.warmup_steps=0"}, "schedule.warmup_steps=0 must be >= 1"},
      {{"train.steps=-1"}, "train.steps=-1 must be >= 0"},
      {{"train.batch_rows=0"}, "train.batch_rows=0"},
      {{"train.seq_len=1"}, "train.seq_len=1"},
      {{"train.microbatches=0"}, "train.microbatches=0"},
      {{"train.threads=-1"}, "train.threads=-1"},
      {{"train.batch_rows=6"},
       "train.batch_rows=6 is not divisible by topology.num_chips * train.microbatches (4 * 1)=4"},
      {{"train.microbatches=2"},
       "= 64 is not divisible by router.group_size=128 (a routing group never spans two chips)"},
      {{"data.synthetic.branching=0"}, "data.synthetic.branching=0"},
      {{"data.synthetic.branching=513"}, "data.synthetic.branching=513"},
      {{"checkpoint.every_steps=-1"}, "checkpoint.every_steps=-1"},
      {{"checkpoint.keep_last=0"}, "checkpoint.keep_last=0"},
      {{"checkpoint.every_steps=5"}, "checkpoint.every_steps=5 needs checkpoint.dir"},
      {{"checkpoint.resume="}, "checkpoint.resume is empty"},
      {{"logging.print_every=0"}, "logging.print_every=0"},
      {{"logging.position_buckets=0"}, "logging.position_buckets=0"},
      {{"logging.position_buckets=65"}, "logging.position_buckets=65 > train.seq_len=64"},
  };
  for (const RuleCase& c : cases) {
    JobSpec spec = Base();
    for (const std::string& s : c.sets) ASSERT_TRUE(ApplySet(s, &spec).ok()) << s;
    absl::Status status = ValidateJob(spec, "a.pbtxt, b.pbtxt");
    ASSERT_FALSE(status.ok()) << c.expected;
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    const std::string msg(status.message());
    EXPECT_EQ(msg.rfind("job (a.pbtxt, b.pbtxt): ", 0), 0u) << msg;
    EXPECT_NE(msg.find(c.expected), std::string::npos)
        << "expected: " << c.expected << "\n     got: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST_F(JobLoaderTest, LoadJobValidatesAndNamesFilesAndSets) {
  const std::string a = Write("a.pbtxt", kBaseJob);
  auto spec = LoadJob({a}, {"model.num_experts=10", "mesh.expert_parallel=4"});
  ASSERT_FALSE(spec.ok());
  const std::string msg(spec.status().message());
  EXPECT_EQ(
      msg.rfind("job (" + a + " --set model.num_experts=10 --set mesh.expert_parallel=4): ", 0), 0u)
      << msg;
  EXPECT_NE(msg.find("model.num_experts=10 is not divisible by mesh.expert_parallel=4"),
            std::string::npos);
}

TEST_F(JobLoaderTest, SeveralProblemsShareOneLine) {
  JobSpec spec = Base();
  ASSERT_TRUE(ApplySet("model.head_dim=15", &spec).ok());
  ASSERT_TRUE(ApplySet("train.steps=-2", &spec).ok());
  absl::Status status = ValidateJob(spec, "x");
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("model.head_dim=15"), std::string::npos);
  EXPECT_NE(status.message().find("; "), std::string::npos);
  EXPECT_NE(status.message().find("train.steps=-2"), std::string::npos);
}

TEST_F(JobLoaderTest, DenseModelSkipsRouterRules) {
  JobSpec spec = Base();
  for (const char* s : {"model.num_experts=0", "router.top_k=0", "router.capacity_factor=0",
                        "mesh.expert_parallel=1", "train.microbatches=2"}) {
    ASSERT_TRUE(ApplySet(s, &spec).ok()) << s;
  }
  EXPECT_TRUE(ValidateJob(spec).ok()) << ValidateJob(spec);
}

TEST_F(JobLoaderTest, DescribeJobFillsDefaultsAndRoundTrips) {
  JobSpec spec = Base();
  const std::string text = DescribeJob(spec);
  EXPECT_NE(text.find("rms_norm_eps: 1e-06"), std::string::npos) << text;
  EXPECT_NE(text.find("min_dim_size_to_factor: 128"), std::string::npos) << text;
  EXPECT_NE(text.find("ffn_form: FFN_OPENMOE"), std::string::npos) << text;
  EXPECT_NE(text.find("resume: \"auto\""), std::string::npos) << text;
  EXPECT_NE(text.find("d_model: 64"), std::string::npos) << text;
  JobSpec parsed;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &parsed));
  EXPECT_EQ(parsed.model().d_model(), 64);
  EXPECT_TRUE(parsed.optimizer().has_min_dim_size_to_factor());
  EXPECT_EQ(DescribeJob(parsed), text);
}

TEST_F(JobLoaderTest, JobDescription) {
  EXPECT_EQ(JobDescription({}), "defaults");
  EXPECT_EQ(JobDescription({"a", "b"}, {"x=1"}), "a, b --set x=1");
}

}  // namespace
}  // namespace openmoe
