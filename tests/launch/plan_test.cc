#include "launch/plan.h"

#include <sstream>
#include <string>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "launch/job_loader.h"

namespace openmoe {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

JobSpec TinyMoe() {
  JobSpec spec;
  for (const char* s :
       {"model.vocab_size=512", "model.num_layers=4", "model.d_model=64", "model.num_heads=4",
        "model.head_dim=16", "model.d_ff=128", "model.num_experts=4", "model.moe_interval=2",
        "router.group_size=128", "topology.num_chips=4", "topology.torus_x=2", "topology.torus_y=2",
        "mesh.expert_parallel=2", "train.batch_rows=8", "train.seq_len=64"}) {
    EXPECT_TRUE(ApplySet(s, &spec).ok()) << s;
  }
  EXPECT_TRUE(ValidateJob(spec).ok()) << ValidateJob(spec);
  return spec;
}

double Number(const Struct& s, const std::string& a, const std::string& b) {
  return s.fields().at(a).struct_value().fields().at(b).number_value();
}

TEST(PlanTest, MeshAndBatchNumbers) {
  const PlanReport r = ComputePlan(TinyMoe());
  EXPECT_EQ(r.num_chips, 4);
  EXPECT_EQ(r.data_parallel, 4);
  EXPECT_EQ(r.expert_parallel, 2);
  EXPECT_EQ(r.experts_per_chip, 2);
  EXPECT_EQ(r.expert_replicas, 2);
  EXPECT_EQ(r.num_hosts, 1);
  EXPECT_EQ(r.tokens_per_step, 8 * 64);
  EXPECT_EQ(r.tokens_per_chip_microbatch, 128);
  EXPECT_EQ(r.groups_per_chip_microbatch, 1);
  EXPECT_EQ(r.num_moe_layers, 2);
  EXPECT_DOUBLE_EQ(r.flops_per_step, r.flops_per_token.total * 512);
  EXPECT_DOUBLE_EQ(r.flops_per_chip_step, r.flops_per_step / 4);
}

TEST(PlanTest, JsonIsValidAndCarriesTheCounts) {
  const JobSpec spec = TinyMoe();
  const PlanReport r = ComputePlan(spec);
  std::ostringstream out;
  ASSERT_TRUE(RunPlan(spec, /*json=*/true, out).ok());
  Struct parsed;
  const auto status = google::protobuf::util::JsonStringToMessage(out.str(), &parsed);
  ASSERT_TRUE(status.ok()) << status.ToString() << "\n" << out.str();
  EXPECT_EQ(Number(parsed, "mesh", "num_chips"), 4);
  EXPECT_EQ(Number(parsed, "mesh", "expert_parallel"), 2);
  EXPECT_EQ(Number(parsed, "params", "total"), static_cast<double>(r.params.total));
  EXPECT_EQ(Number(parsed, "params", "activated"), static_cast<double>(r.params.activated));
  EXPECT_EQ(Number(parsed, "flops", "per_token"), r.flops_per_token.total);
  EXPECT_EQ(Number(parsed, "memory_per_chip", "total_bytes"),
            static_cast<double>(r.memory.total_bytes));
  const Struct& experts = parsed.fields()
                              .at("params")
                              .struct_value()
                              .fields()
                              .at("by_component")
                              .struct_value()
                              .fields()
                              .at("experts")
                              .struct_value();
  EXPECT_EQ(experts.fields().at("total").number_value(),
            static_cast<double>(r.params[Component::kExperts].total));
  EXPECT_EQ(experts.fields().at("activated").number_value(),
            static_cast<double>(r.params[Component::kExperts].total / 2));  // top-2 of 4
}

TEST(PlanTest, JsonEscapesTheName) {
  JobSpec spec = TinyMoe();
  spec.mutable_model()->set_name("a \"quoted\"\\name\n");
  std::ostringstream out;
  ASSERT_TRUE(RunPlan(spec, true, out).ok());
  Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out.str(), &parsed).ok()) << out.str();
  EXPECT_EQ(parsed.fields().at("name").string_value(), "a \"quoted\"\\name\n");
}

TEST(PlanTest, TextNamesEverySection) {
  std::ostringstream out;
  ASSERT_TRUE(RunPlan(TinyMoe(), false, out).ok());
  const std::string text = out.str();
  for (const char* s :
       {"mesh", "expert_parallel   2", "data_parallel     4", "experts", "router", "non-embedding",
        "training FLOPs", "adafactor state", "2 experts per chip per MoE layer"}) {
    EXPECT_NE(text.find(s), std::string::npos) << s << "\n" << text;
  }
}

TEST(PlanTest, InvalidSpecIsAnErrorNotACrash) {
  JobSpec spec = TinyMoe();
  spec.mutable_mesh()->set_expert_parallel(0);
  std::ostringstream out;
  const absl::Status status = RunPlan(spec, false, out);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("mesh.expert_parallel=0"), std::string::npos) << status;
  EXPECT_TRUE(out.str().empty());
}

}  // namespace
}  // namespace openmoe
