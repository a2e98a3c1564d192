// Shared experts in the cost model and `openmoe plan`, by hand: their FFN in the model FLOPs
// (every token, not capacity-bound), the gradient all-reduce, the model axis's all-reduces, the
// HBM traffic and saved activations of their gate, and the plan's text and JSON.
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "launch/plan_command.h"
#include "model/config.h"
#include "model/param_count.h"
#include "model/params.h"
#include "parallel/cost/hbm_traffic.h"
#include "parallel/cost/plan.h"
#include "parallel/cost/step_workload.h"
#include "tests/testing/cost_jobs.h"

namespace openmoe {
namespace {

using testing::FindCollective;
using testing::SliceOf;

// testing::SmallMoeCostJob with `shared` shared experts of expert_d_ff 32 (fine-grained: a quarter
// of d_ff) and model axis `mp`.
JobSpec SmallMoe(int64_t shared, int64_t mp = 1) {
  const std::string shared_set = absl::StrCat("model.num_shared_experts=", shared);
  const std::string mp_set = absl::StrCat("mesh.model_parallel=", mp);
  return testing::SmallMoeCostJob({"model.expert_d_ff=32", shared_set.c_str(), mp_set.c_str()});
}

// Two shared experts of 32: one OpenMoE FFN of hidden 64, 4 x 64 x 64 parameters.
constexpr double kSharedParams = 4.0 * 64 * 64;

TEST(SharedExpertsCost, ModelFlopsCountTheSharedFfnForEveryToken) {
  const StepWorkload none = EstimateStepWorkload(SmallMoe(0), SliceOf(SmallMoe(0)));
  const StepWorkload with = EstimateStepWorkload(SmallMoe(2), SliceOf(SmallMoe(2)));
  const double tokens = 32.0 * 64 / 16;
  EXPECT_DOUBLE_EQ(with.model_flops_per_chip - none.model_flops_per_chip,
                   6 * kSharedParams * tokens);
  // The capacity buffer's extra rows are the routed experts' alone.
  EXPECT_DOUBLE_EQ(with.capacity_flops_per_chip, none.capacity_flops_per_chip);
  // Their gradients are reduced with the other non-expert ones, in fp32.
  EXPECT_DOUBLE_EQ(FindCollective(with, CollectiveKind::kAllReduceShared).bytes_per_chip -
                       FindCollective(none, CollectiveKind::kAllReduceShared).bytes_per_chip,
                   4 * kSharedParams);
  EXPECT_DOUBLE_EQ(FindCollective(with, CollectiveKind::kAllReduceExperts).bytes_per_chip,
                   FindCollective(none, CollectiveKind::kAllReduceExperts).bytes_per_chip);
}

TEST(SharedExpertsCost, TrafficAndActivationsOfTheirGate) {
  const double d = 64, fs = 64, r = 1.25;  // capacity round(1.25 * 64 / 4) = 20: 80 rows of 64
  const TokenTraffic none = TrafficPerToken(DimsFromSpec(SmallMoe(0)), 64, r);
  const TokenTraffic with = TrafficPerToken(DimsFromSpec(SmallMoe(2)), 64, r);
  // The OpenMoE gate 11 fs, and the add into the routed output 3d forward, 3d backward.
  EXPECT_DOUBLE_EQ(with.elementwise_elements - none.elementwise_elements, 6 * d + 11 * fs);
  EXPECT_DOUBLE_EQ(with.saved_elements - none.saved_elements, 4 * fs);
  EXPECT_DOUBLE_EQ(with.layer_forward_elements - none.layer_forward_elements, 3 * d + 4 * fs);
}

TEST(SharedExpertsCost, ModelAxisAllReducesTheirOutputAndInputGradient) {
  const StepWorkload none = EstimateStepWorkload(SmallMoe(0, 2), SliceOf(SmallMoe(0, 2)));
  const StepWorkload with = EstimateStepWorkload(SmallMoe(2, 2), SliceOf(SmallMoe(2, 2)));
  // One MoE layer: one more forward and one more backward all-reduce per microbatch (2).
  EXPECT_EQ(FindCollective(with, CollectiveKind::kAllReduceModel).calls -
                FindCollective(none, CollectiveKind::kAllReduceModel).calls,
            2 * 2);
  // Each chip holds half of the shared FFN's columns.
  EXPECT_DOUBLE_EQ(FindCollective(with, CollectiveKind::kAllReduceShared).bytes_per_chip -
                       FindCollective(none, CollectiveKind::kAllReduceShared).bytes_per_chip,
                   4 * kSharedParams / 2);
  EXPECT_DOUBLE_EQ(with.model_flops_per_chip - none.model_flops_per_chip,
                   6 * kSharedParams * (32.0 * 64 / 8) / 2);
}

TEST(SharedExpertsCost, PlanShowsThemInTextAndJson) {
  const JobSpec spec = SmallMoe(2);
  const PlanReport r = ComputePlan(spec);
  EXPECT_EQ(r.params[Component::kSharedExperts].total, static_cast<int64_t>(kSharedParams));
  EXPECT_EQ(r.params[Component::kSharedExperts].activated, static_cast<int64_t>(kSharedParams));
  std::ostringstream text;
  ASSERT_TRUE(RunPlan(spec, /*json=*/false, text).ok());
  EXPECT_NE(text.str().find("shared experts    2 per MoE layer (d_ff 32 each)"), std::string::npos)
      << text.str();
  EXPECT_NE(text.str().find("shared_experts"), std::string::npos) << text.str();

  std::ostringstream json;
  ASSERT_TRUE(RunPlan(spec, /*json=*/true, json).ok());
  google::protobuf::Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.str(), &parsed).ok()) << json.str();
  const auto& model = parsed.fields().at("model").struct_value().fields();
  EXPECT_EQ(model.at("num_shared_experts").number_value(), 2);
  const auto& shared = parsed.fields()
                           .at("params")
                           .struct_value()
                           .fields()
                           .at("by_component")
                           .struct_value()
                           .fields()
                           .at("shared_experts")
                           .struct_value()
                           .fields();
  EXPECT_EQ(shared.at("total").number_value(), kSharedParams);
  EXPECT_EQ(shared.at("activated").number_value(), kSharedParams);
}

}  // namespace
}  // namespace openmoe
