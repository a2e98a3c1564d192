// Every job spec shipped under launch/configs loads, validates and plans.
#include <filesystem>
#include <set>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "launch/plan.h"

namespace openmoe {
namespace {

std::filesystem::path ConfigDir() {
  // tests/launch/configs_test.cc -> repository root.
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "launch" /
         "configs";
}

TEST(ConfigsTest, EveryConfigLoadsValidatesAndPlans) {
  std::set<std::string> seen;
  for (const auto& entry : std::filesystem::directory_iterator(ConfigDir())) {
    if (entry.path().extension() != ".pbtxt") continue;
    SCOPED_TRACE(entry.path().string());
    auto spec = LoadJob({entry.path().string()}, {});
    ASSERT_TRUE(spec.ok()) << spec.status();
    EXPECT_EQ(spec->model().name(), entry.path().stem().string());
    std::ostringstream text, json;
    EXPECT_TRUE(RunPlan(*spec, false, text).ok());
    EXPECT_TRUE(RunPlan(*spec, true, json).ok());
    EXPECT_NE(text.str().find("expert_parallel"), std::string::npos);
    seen.insert(entry.path().filename().string());
  }
  for (const char* required :
       {"openmoe_base_16e.pbtxt", "openmoe_8b_32e.pbtxt", "openmoe_34b_32e.pbtxt",
        "openllama_base.pbtxt", "tiny.pbtxt", "bench_small.pbtxt"}) {
    EXPECT_EQ(seen.count(required), 1u) << required;
  }
}

TEST(ConfigsTest, ReferenceConfigsHaveTheDesignDimensions) {
  struct Dims {
    const char* file;
    int64_t layers, d_model, heads, head_dim, d_ff, experts, interval;
  };
  for (const Dims& want : {Dims{"openmoe_base_16e.pbtxt", 12, 768, 12, 64, 2048, 16, 4},
                           Dims{"openmoe_8b_32e.pbtxt", 24, 2048, 24, 128, 8192, 32, 6},
                           Dims{"openmoe_34b_32e.pbtxt", 32, 3072, 24, 128, 12288, 32, 4},
                           Dims{"openllama_base.pbtxt", 12, 768, 12, 64, 2048, 0, 4}}) {
    SCOPED_TRACE(want.file);
    auto spec = LoadJob({(ConfigDir() / want.file).string()}, {});
    ASSERT_TRUE(spec.ok()) << spec.status();
    const ModelConfig& m = spec->model();
    EXPECT_EQ(m.num_layers(), want.layers);
    EXPECT_EQ(m.d_model(), want.d_model);
    EXPECT_EQ(m.num_heads(), want.heads);
    EXPECT_EQ(m.head_dim(), want.head_dim);
    EXPECT_EQ(m.d_ff(), want.d_ff);
    EXPECT_EQ(m.num_experts(), want.experts);
    if (want.experts > 0) {
      EXPECT_EQ(m.moe_interval(), want.interval);
    }
    EXPECT_EQ(m.vocab_size(), 256300);
    EXPECT_EQ(m.vocab_pad_multiple(), 128);
    EXPECT_EQ(m.ffn_form(), FFN_OPENMOE);
    EXPECT_TRUE(m.extra_dense_ffn());
    EXPECT_EQ(spec->train().seq_len(), 2048);
    EXPECT_EQ(spec->topology().chip(), "tpu_v3");
    EXPECT_EQ(spec->topology().chips_per_host(), 4);
    const int64_t chips = spec->topology().num_chips();
    EXPECT_TRUE(chips == 64 || chips == 128 || chips == 256 || chips == 512) << chips;
    const PlanReport plan = ComputePlan(*spec);
    EXPECT_EQ(plan.dims.padded_vocab_size, 256384);
  }
}

TEST(ConfigsTest, TinyIsSmall) {
  auto spec = LoadJob({(ConfigDir() / "tiny.pbtxt").string()}, {});
  ASSERT_TRUE(spec.ok()) << spec.status();
  const PlanReport plan = ComputePlan(*spec);
  EXPECT_LT(plan.params.total, 1000000);
  EXPECT_EQ(plan.num_moe_layers, 2);
  EXPECT_EQ(spec->train().steps(), 200);
  // Flat learning rate 0.01 for the whole run.
  EXPECT_DOUBLE_EQ(spec->schedule().peak_learning_rate(), 0.01);
  EXPECT_GE(spec->schedule().warmup_steps(), spec->train().steps());
}

}  // namespace
}  // namespace openmoe
