// Every job spec shipped under launch/configs (recursively) loads, validates and plans, overlays
// merged over the base job README says they go with.
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "launch/plan_command.h"
#include "parallel/cost/plan.h"

namespace openmoe {
namespace {

std::filesystem::path ConfigDir() {
  // OPENMOE_SOURCE_DIR (tests/CMakeLists.txt), not __FILE__: with ccache's base dir __FILE__ is
  // relative to the build directory, so the test would depend on where it is run from.
  return std::filesystem::path(OPENMOE_SOURCE_DIR) / "launch" / "configs";
}

// How README's configs table says each file is used: top-level jobs load alone (tiny_corpus also
// merged over tiny, as its header says); topology/* are merged over tiny.pbtxt with the overrides
// launch/mpirun_local.sh lists for them; data/* are merged over a model job.
struct ConfigLoad {
  std::vector<std::string> files;
  std::vector<std::string> sets;
  std::string want_model_name;
};

std::vector<ConfigLoad> LoadsFor(const std::filesystem::path& file) {
  const std::string dir = file.parent_path().filename().string();
  const std::string tiny = (ConfigDir() / "tiny.pbtxt").string();
  if (dir == "topology") {
    return {{{tiny, file.string()},
             {"train.batch_rows=512", "router.group_size=64", "mesh.expert_parallel=4"},
             "tiny"}};
  }
  if (dir == "data") {
    return {{{(ConfigDir() / "openmoe_base_16e.pbtxt").string(), file.string()}, {},
             "openmoe_base_16e"}};
  }
  std::vector<ConfigLoad> loads = {{{file.string()}, {}, file.stem().string()}};
  if (file.filename() == "tiny_corpus.pbtxt") loads.push_back({{tiny, file.string()}, {}, "tiny_corpus"});
  return loads;
}

TEST(ConfigsTest, EveryConfigLoadsValidatesAndPlans) {
  std::set<std::string> seen;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(ConfigDir())) {
    if (!entry.is_regular_file() || entry.path().extension() != ".pbtxt") continue;
    for (const ConfigLoad& load : LoadsFor(entry.path())) {
      SCOPED_TRACE(JobDescription(load.files, load.sets));
      auto spec = LoadJob(load.files, load.sets);
      ASSERT_TRUE(spec.ok()) << spec.status();
      EXPECT_EQ(spec->model().name(), load.want_model_name);
      std::ostringstream text, json;
      EXPECT_TRUE(RunPlan(*spec, false, text).ok());
      EXPECT_TRUE(RunPlan(*spec, true, json).ok());
      EXPECT_NE(text.str().find("expert_parallel"), std::string::npos);
      // An overlay must change what it claims to set, not be silently overridden or empty.
      if (load.files.size() > 1) {
        auto base = LoadJob({load.files[0]}, load.sets);
        ASSERT_TRUE(base.ok()) << base.status();
        EXPECT_NE(spec->SerializeAsString(), base->SerializeAsString());
      }
    }
    seen.insert(std::filesystem::relative(entry.path(), ConfigDir()).string());
  }
  for (const char* required :
       {"openmoe_base_16e.pbtxt", "openmoe_8b_32e.pbtxt", "openmoe_34b_32e.pbtxt",
        "openllama_base.pbtxt", "tiny.pbtxt", "bench_small.pbtxt", "tiny_corpus.pbtxt",
        "topology/v3-64.pbtxt", "topology/v3-128.pbtxt", "topology/v3-256.pbtxt",
        "topology/v3-512.pbtxt", "data/redpajama_stack_umt5.pbtxt"}) {
    EXPECT_EQ(seen.count(required), 1u) << required;
  }
}

TEST(ConfigsTest, TopologyOverlaysSetTheirSlice) {
  struct Slice {
    const char* file;
    int64_t chips, x, y;
  };
  for (const Slice& want : {Slice{"v3-64.pbtxt", 64, 8, 8}, Slice{"v3-128.pbtxt", 128, 8, 16},
                            Slice{"v3-256.pbtxt", 256, 16, 16}, Slice{"v3-512.pbtxt", 512, 16, 32}}) {
    SCOPED_TRACE(want.file);
    const std::filesystem::path file = ConfigDir() / "topology" / want.file;
    const ConfigLoad load = LoadsFor(file)[0];
    auto spec = LoadJob(load.files, load.sets);
    ASSERT_TRUE(spec.ok()) << spec.status();
    EXPECT_EQ(spec->topology().num_chips(), want.chips);
    EXPECT_EQ(spec->topology().torus_x(), want.x);
    EXPECT_EQ(spec->topology().torus_y(), want.y);
    EXPECT_EQ(spec->topology().chips_per_host(), 4);
    EXPECT_EQ(spec->topology().chip(), "tpu_v3");
    EXPECT_EQ(spec->model().d_model(), 64);  // tiny's model survives the merge
  }
}

TEST(ConfigsTest, DataOverlayKeepsTheModelAndSetsTheCorpus) {
  const ConfigLoad load = LoadsFor(ConfigDir() / "data" / "redpajama_stack_umt5.pbtxt")[0];
  auto spec = LoadJob(load.files, load.sets);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model().d_model(), 768);
  EXPECT_EQ(spec->model().vocab_size(), 256300);  // 256000 umT5 pieces + 300 extra ids
  EXPECT_EQ(spec->data().tokenizer().extra_ids(), 300);
  EXPECT_EQ(spec->data().source(), DATA_CORPUS);
  ASSERT_EQ(spec->data().sources_size(), 2);
  EXPECT_EQ(spec->data().sources(0).text_field(), "text");
  EXPECT_EQ(spec->data().sources(1).text_field(), "content");
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
