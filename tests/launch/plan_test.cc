#include "launch/plan_command.h"
#include "parallel/cost/plan.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "parallel/cost/calibration_residuals.h"
#include "model/config.h"

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

TEST(PlanTest, CostModelSectionInJsonMatchesTheReport) {
  const JobSpec spec = TinyMoe();
  const PlanReport r = ComputePlan(spec);
  EXPECT_GT(r.cost.step_seconds, 0);
  // The parts sum to the unoverlapped step; the prediction is the overlapped one (default on).
  EXPECT_DOUBLE_EQ(r.cost.unoverlapped_step_seconds,
                   r.cost.compute_seconds + r.cost.memory_seconds + r.cost.all_to_all_seconds +
                       r.cost.all_reduce_seconds);
  EXPECT_DOUBLE_EQ(r.cost.step_seconds, r.cost.overlapped_step_seconds);
  std::ostringstream out;
  ASSERT_TRUE(RunPlan(spec, /*json=*/true, out).ok());
  Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out.str(), &parsed).ok()) << out.str();
  const Struct& cost = parsed.fields().at("cost_model").struct_value();
  EXPECT_DOUBLE_EQ(cost.fields().at("step_seconds").number_value(), r.cost.step_seconds);
  EXPECT_DOUBLE_EQ(cost.fields().at("mfu").number_value(), r.cost.mfu);
  EXPECT_DOUBLE_EQ(Number(cost, "breakdown", "all_to_all"), r.cost.all_to_all_seconds);
  // Both steps and the overlap's account (issue 23).
  EXPECT_DOUBLE_EQ(cost.fields().at("unoverlapped_step_seconds").number_value(),
                   r.cost.unoverlapped_step_seconds);
  EXPECT_DOUBLE_EQ(cost.fields().at("overlapped_step_seconds").number_value(),
                   r.cost.overlapped_step_seconds);
  EXPECT_TRUE(cost.fields().at("grad_reduce").struct_value().fields().at("overlap").bool_value());
  EXPECT_DOUBLE_EQ(Number(cost, "grad_reduce", "exposed_seconds"),
                   r.cost.grad_reduce_exposed_seconds);
  EXPECT_EQ(Number(cost, "grad_reduce", "bucket_bytes"), 4.0 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(Number(cost, "config", "peak_flops_per_chip"), 123e12);
  EXPECT_TRUE(cost.fields().at("memory_per_core").struct_value().fields().at("fits").bool_value());
  EXPECT_EQ(Number(cost, "memory_per_core", "cores_per_chip"), 2);
  const auto& collectives = cost.fields().at("collectives").list_value().values();
  ASSERT_EQ(collectives.size(), 3);
  const auto& a2a = collectives[2].struct_value().fields();
  EXPECT_EQ(a2a.at("kind").string_value(), "all_to_all");
  EXPECT_EQ(a2a.at("group_size").number_value(), 2);
  EXPECT_EQ(a2a.at("placement").string_value(), "2x1 (x line)");
}

TEST(PlanTest, OpenMoe34bOn512ChipsPlansWithoutAllocating) {
  JobSpec spec;
  for (const char* s :
       {"model.vocab_size=256300", "model.num_layers=32", "model.d_model=3072",
        "model.num_heads=24", "model.head_dim=128", "model.d_ff=12288", "model.num_experts=32",
        "model.moe_interval=4", "router.group_size=2048", "topology.num_chips=512",
        "topology.torus_x=16", "topology.torus_y=32", "mesh.expert_parallel=32",
        "train.batch_rows=1024", "train.seq_len=2048", "train.microbatches=2"}) {
    ASSERT_TRUE(ApplySet(s, &spec).ok()) << s;
  }
  std::ostringstream out;
  ASSERT_TRUE(RunPlan(spec, false, out).ok());
  const std::string text = out.str();
  for (const char* s : {"predicted step on a TPU v3 slice", "16x32 torus", "MFU", "all_to_all",
                        "16x2 (x ring, y line)", "does NOT fit"}) {
    EXPECT_NE(text.find(s), std::string::npos) << s << "\n" << text;
  }
}

TEST(PlanTest, InvalidCostModelIsAnError) {
  JobSpec spec = TinyMoe();
  spec.mutable_cost_model()->set_hbm_bandwidth(-1);
  std::ostringstream out;
  const absl::Status status = RunPlan(spec, false, out);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("cost_model.hbm_bandwidth=-1"), std::string::npos) << status;
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
        "training FLOPs", "adafactor state", "2 experts per chip per MoE layer",
        "predicted step on a TPU v3 slice", "step time", "all_reduce_shared", "HBM per core",
        "calibrated on GShard Table 3: residuals"}) {
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

JobSpec LoadConfigs(const std::vector<std::string>& names) {
  std::vector<std::string> paths;
  for (const std::string& n : names) paths.push_back(std::string(OPENMOE_SOURCE_DIR) + "/" + n);
  auto spec = LoadJob(paths, {});
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : JobSpec();
}

TEST(PlanTest, ModelParallelShowsTheSplitAndTheModelAxisCollectives) {
  JobSpec spec = TinyMoe();
  ASSERT_TRUE(ApplySet("mesh.model_parallel=2", &spec).ok());
  ASSERT_TRUE(ApplySet("mesh.expert_parallel=1", &spec).ok());
  const PlanReport r = ComputePlan(spec);
  EXPECT_EQ(r.model_parallel, 2);
  EXPECT_EQ(r.data_parallel, 2);  // 4 chips / 2: two data shards
  EXPECT_EQ(r.tokens_per_chip_microbatch, 8 * 64 / 2);
  EXPECT_LT(r.memory.params, ComputePlan(TinyMoe()).memory.params * 2);
  std::ostringstream out;
  ASSERT_TRUE(RunPlan(spec, false, out).ok());
  for (const char* s : {"model_parallel    2", "all_reduce_model", "all_reduce_model_experts",
                        "all_reduce_model_loss", "of it the model axis", "per shard"}) {
    EXPECT_NE(out.str().find(s), std::string::npos) << s << "\n" << out.str();
  }
  std::ostringstream json;
  ASSERT_TRUE(RunPlan(spec, true, json).ok());
  Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.str(), &parsed).ok()) << json.str();
  EXPECT_EQ(Number(parsed, "mesh", "model_parallel"), 2);
}

// The layouts a search must list, from the rules written out here (not ValidateJob's code).
std::set<std::pair<int64_t, int64_t>> BruteForceLayouts(const JobSpec& spec) {
  const ModelDims d = DimsFromSpec(spec);
  const int64_t chips = spec.topology().num_chips(), mb = spec.train().microbatches();
  const int64_t padded = (spec.model().vocab_size() + spec.model().vocab_pad_multiple() - 1) /
                         spec.model().vocab_pad_multiple() * spec.model().vocab_pad_multiple();
  std::set<std::pair<int64_t, int64_t>> valid;
  for (int64_t mp = 1; mp <= chips; ++mp) {
    for (int64_t ep = 1; ep <= chips; ++ep) {
      if (chips % (ep * mp) != 0 || spec.model().num_experts() % ep != 0) continue;
      if (spec.model().num_heads() % mp != 0 || spec.model().d_ff() % mp != 0 ||
          d.expert_d_ff % mp != 0 || padded % mp != 0) {
        continue;
      }
      const int64_t shards = chips / mp;
      if (spec.train().batch_rows() % (shards * mb) != 0) continue;
      const int64_t tokens = spec.train().batch_rows() / (shards * mb) * spec.train().seq_len();
      if (tokens % spec.router().group_size() != 0) continue;
      valid.insert({ep, mp});
    }
  }
  return valid;
}

TEST(PlanSearchTest, ListsExactlyTheValidLayoutsRankedByStepTime) {
  // 16 chips (4x4), 4 experts (ep <= 4), 4 heads (mp <= 4), vocabulary 502 (mp 4 does not
  // divide it), 16 rows of 64 tokens in routing groups of 64: one row per chip, so with 2
  // microbatches mp 1 leaves half a row per chip per microbatch.
  JobSpec spec = TinyMoe();
  for (const char* s : {"topology.num_chips=16", "topology.torus_x=4", "topology.torus_y=4",
                        "model.vocab_size=502", "model.vocab_pad_multiple=2",
                        "train.batch_rows=16", "router.group_size=64"}) {
    ASSERT_TRUE(ApplySet(s, &spec).ok()) << s;
  }
  for (int64_t microbatches : {1, 2}) {
    spec.mutable_train()->set_microbatches(microbatches);
    const std::set<std::pair<int64_t, int64_t>> expected = BruteForceLayouts(spec);
    ASSERT_FALSE(expected.empty());
    std::ostringstream out;
    ASSERT_TRUE(RunPlanSearch(spec, true, out).ok()) << out.str();
    Struct parsed;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out.str(), &parsed).ok()) << out.str();
    std::set<std::pair<int64_t, int64_t>> listed;
    double previous = 0;
    for (const Value& v : parsed.fields().at("layouts").list_value().values()) {
      const auto& f = v.struct_value().fields();
      const int64_t ep = static_cast<int64_t>(f.at("expert_parallel").number_value());
      const int64_t mp = static_cast<int64_t>(f.at("model_parallel").number_value());
      EXPECT_EQ(f.at("data_parallel").number_value(), 16 / mp);
      EXPECT_TRUE(listed.insert({ep, mp}).second) << "listed twice: " << ep << "," << mp;
      const double step = f.at("step_seconds").number_value();
      // Ranked by the overlapped step (train.overlap_grad_reduce, default on; issue 23).
      EXPECT_DOUBLE_EQ(step, f.at("overlapped_step_seconds").number_value());
      EXPECT_GT(f.at("unoverlapped_step_seconds").number_value(), 0);
      EXPECT_GE(step, previous);
      previous = step;
      EXPECT_TRUE(f.at("fits").has_bool_value());
      // Each listed layout is what plain `plan` predicts for it.
      JobSpec one = spec;
      one.mutable_mesh()->set_expert_parallel(ep);
      one.mutable_mesh()->set_model_parallel(mp);
      one.mutable_train()->set_microbatches(
          static_cast<int64_t>(f.at("microbatches").number_value()));
      EXPECT_DOUBLE_EQ(step, ComputePlan(one).cost.step_seconds);
    }
    EXPECT_EQ(listed, expected) << "microbatches " << microbatches;
    EXPECT_EQ(listed.count({1, 4}), 0u);  // the vocabulary rule bites
    EXPECT_EQ(listed.count({1, 1}), microbatches == 1 ? 1u : 0u);  // the batch rule bites
    EXPECT_LT(listed.size(), 16u * 16u);
  }
}

TEST(PlanSearchTest, TextMarksTheFitAndNoValidLayoutIsAnError) {
  JobSpec spec = TinyMoe();
  std::ostringstream out;
  ASSERT_TRUE(RunPlanSearch(spec, false, out).ok());
  for (const char* s : {"openmoe plan --search", "valid layouts", "fits", "best that fits"}) {
    EXPECT_NE(out.str().find(s), std::string::npos) << s << "\n" << out.str();
  }
  spec.mutable_router()->set_group_size(4096);  // larger than any shard's tokens
  std::ostringstream none;
  const absl::Status status = RunPlanSearch(spec, false, none);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("no valid layout"), std::string::npos) << status;
  EXPECT_NE(status.message().find("router.group_size"), std::string::npos) << status;
  EXPECT_TRUE(none.str().empty());
}

// The OpenMoE configs on their slices: some layout fits in a v3 chip's 32 GiB.
void ExpectSomeLayoutFits(const std::vector<std::string>& configs) {
  const JobSpec spec = LoadConfigs(configs);
  std::ostringstream out;
  ASSERT_TRUE(RunPlanSearch(spec, true, out).ok());
  Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out.str(), &parsed).ok()) << out.str();
  int fitting = 0;
  for (const Value& v : parsed.fields().at("layouts").list_value().values()) {
    const auto& f = v.struct_value().fields();
    if (!f.at("fits").bool_value()) continue;
    ++fitting;
    EXPECT_LE(f.at("memory_bytes").number_value(), 32.0 * 1024 * 1024 * 1024);
  }
  EXPECT_GE(fitting, 1) << out.str();
  EXPECT_TRUE(parsed.fields().at("best_fitting").has_struct_value());
}

TEST(PlanSearchTest, OpenMoe8bOnV3_256HasALayoutThatFits) {
  ExpectSomeLayoutFits({"launch/configs/openmoe_8b_32e.pbtxt",
                        "launch/configs/topology/v3-256.pbtxt"});
}

TEST(PlanSearchTest, OpenMoe34bOnV3_512HasALayoutThatFits) {
  ExpectSomeLayoutFits({"launch/configs/openmoe_34b_32e.pbtxt",
                        "launch/configs/topology/v3-512.pbtxt"});
}

// The anchors (launch/configs/anchors/, bench/cost_model_anchors.sh) pass plan, and the residual
// ranges plan prints are the csv's: re-read the csv, recompute each residual from its published and
// predicted step times, and compare with the compiled-in ranges: the calibration set (fitted)
// within +-10%. The small-model check (not fitted) is recorded as it is: today 24-46% fast
// (README "Small models"), so only its range is checked against the header.
TEST(CalibrationTest, AnchorsPlanAndTheResidualRangesAreTheCsvs) {
  const std::string root = OPENMOE_SOURCE_DIR;
  std::ifstream csv(root + "/bench/results/cost_model_anchors.csv");
  ASSERT_TRUE(csv.good());
  std::string line;
  std::getline(csv, line);
  ASSERT_EQ(line.rfind("job,published_steps_per_s,published_step_s,predicted_step_s,", 0), 0u)
      << line;
  ASSERT_NE(line.find(",set,"), std::string::npos) << line;
  struct Range {
    double lo = 1e9, hi = -1e9;
    int rows = 0;
  } calibration_range, check_range;
  while (std::getline(csv, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    ASSERT_GE(f.size(), 13u) << line;
    const JobSpec spec = LoadConfigs({"launch/configs/anchors/" + f[0] + ".pbtxt"});
    std::ostringstream out;
    ASSERT_TRUE(RunPlan(spec, false, out).ok()) << f[0];
    const double published = std::stod(f[2]);
    const double predicted = ComputePlan(spec).cost.step_seconds;
    EXPECT_NEAR(predicted, std::stod(f[3]), 1e-4) << f[0] << ": rerun bench/cost_model_anchors.sh";
    const double residual = predicted / published - 1;
    const bool calibration_row = f[12] == "calibration";
    ASSERT_TRUE(calibration_row || f[12] == "check") << line;
    if (calibration_row) {
      EXPECT_LE(std::abs(residual), 0.1) << f[0];
    }
    Range& r = calibration_row ? calibration_range : check_range;
    r.lo = std::min(r.lo, residual);
    r.hi = std::max(r.hi, residual);
    ++r.rows;
  }
  EXPECT_EQ(calibration_range.rows, calibration::kRows);
  EXPECT_NEAR(calibration::kMinResidual, calibration_range.lo, 1e-3);
  EXPECT_NEAR(calibration::kMaxResidual, calibration_range.hi, 1e-3);
  EXPECT_EQ(check_range.rows, calibration::kCheckRows);
  if (check_range.rows > 0) {
    EXPECT_NEAR(calibration::kCheckMinResidual, check_range.lo, 1e-3);
    EXPECT_NEAR(calibration::kCheckMaxResidual, check_range.hi, 1e-3);
  }
}

}  // namespace
}  // namespace openmoe
