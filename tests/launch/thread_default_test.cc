// DefaultGemmThreads: the measured configs get the thread count that was faster for them, and
// the rule's boundary sits where the header says.
#include "launch/thread_default.h"

#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "launch/job_loader.h"

namespace openmoe {
namespace {

JobSpec LoadConfig(const std::string& name, const std::vector<std::string>& sets = {}) {
  const std::filesystem::path root = OPENMOE_SOURCE_DIR;  // set for launch_tests by CMake
  auto spec = LoadJob({(root / "launch" / "configs" / name).string()}, sets);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : JobSpec();
}

JobSpec WithDModel(int64_t d_model) {
  JobSpec spec;
  spec.mutable_model()->set_d_model(d_model);
  return spec;
}

// tiny (d_model 64) ran ~2x faster on 1 thread than on 2: it keeps 1 whatever the cores.
TEST(DefaultGemmThreads, TinyUsesOneThread) {
  const JobSpec tiny = LoadConfig("tiny.pbtxt");
  ASSERT_EQ(tiny.model().d_model(), 64);
  EXPECT_EQ(DefaultGemmThreads(tiny, 1), 1);
  EXPECT_EQ(DefaultGemmThreads(tiny, 2), 1);
  EXPECT_EQ(DefaultGemmThreads(tiny, 16), 1);
}

// bench_small (d_model 512) and the OpenMoE configs use every core the rank has.
TEST(DefaultGemmThreads, LargerModelsUseTheRanksCores) {
  for (const char* name : {"bench_small.pbtxt", "openmoe_base_16e.pbtxt"}) {
    const JobSpec spec = LoadConfig(name);
    EXPECT_GE(spec.model().d_model(), 512) << name;
    EXPECT_EQ(DefaultGemmThreads(spec, 2), 2) << name;
    EXPECT_EQ(DefaultGemmThreads(spec, 7), 7) << name;
  }
}

TEST(DefaultGemmThreads, BoundaryIsTheHeadersThreshold) {
  EXPECT_EQ(DefaultGemmThreads(WithDModel(kMinDModelForThreads - 1), 4), 1);
  EXPECT_EQ(DefaultGemmThreads(WithDModel(kMinDModelForThreads), 4), 4);
}

// A rank with no core of its own (more ranks than cores) still gets one thread.
TEST(DefaultGemmThreads, NeverBelowOne) {
  EXPECT_EQ(DefaultGemmThreads(LoadConfig("bench_small.pbtxt"), 0), 1);
  EXPECT_EQ(DefaultGemmThreads(WithDModel(64), 0), 1);
}

}  // namespace
}  // namespace openmoe
