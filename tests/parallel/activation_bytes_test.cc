// The cost model's bytes per activation element follow train.compute_dtype (FP32: 4, BF16: 2)
// unless the job sets cost_model.activation_bytes, which then wins; `openmoe plan` reports the
// value it used.
#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "parallel/cost/hbm_traffic.h"
#include "parallel/cost/plan.h"
#include "parallel/cost/step_workload.h"

namespace openmoe {
namespace {

// 1 MoE layer of 4 experts (d 64) on 16 chips, expert groups of 4; 64 tokens per chip per
// microbatch, one routing group of 64: capacity round(1.25 * 64 / 4) = 20, so the padded
// dispatch buffer is 4 x 20 = 80 rows of d_model 64.
JobSpec Job(const char* dtype) {
  JobSpec spec;
  for (const char* s :
       {"model.vocab_size=256", "model.num_layers=2", "model.d_model=64", "model.num_heads=4",
        "model.head_dim=16", "model.d_ff=128", "model.num_experts=4", "model.moe_interval=2",
        "router.group_size=64", "topology.num_chips=16", "topology.torus_x=4", "topology.torus_y=4",
        "mesh.expert_parallel=4", "train.batch_rows=32", "train.seq_len=64",
        "train.microbatches=2"}) {
    EXPECT_TRUE(ApplySet(s, &spec).ok()) << s;
  }
  EXPECT_TRUE(ApplySet(std::string("train.compute_dtype=") + dtype, &spec).ok()) << dtype;
  EXPECT_TRUE(ValidateJob(spec).ok()) << ValidateJob(spec);
  return spec;
}

Mesh Slice() {
  Mesh m;
  m.num_chips = 16;
  m.torus_x = 4;
  m.torus_y = 4;
  m.expert_parallel = 4;
  m.num_experts = 4;
  return m;
}

double AllToAllBytes(const StepWorkload& w) {
  for (const CollectiveWork& c : w.collectives) {
    if (c.kind == CollectiveKind::kAllToAll) return c.bytes_per_chip;
  }
  ADD_FAILURE() << "no all-to-all";
  return 0;
}

TEST(ActivationBytes, FollowTheComputeDtype) {
  const JobSpec fp32 = Job("FP32"), bf16 = Job("BF16");
  EXPECT_EQ(ActivationBytes(fp32), 4);
  EXPECT_EQ(ActivationBytes(bf16), 2);
  const StepWorkload a = EstimateStepWorkload(fp32, Slice());
  const StepWorkload b = EstimateStepWorkload(bf16, Slice());
  EXPECT_DOUBLE_EQ(AllToAllBytes(a), 80.0 * 64 * 4);
  EXPECT_DOUBLE_EQ(AllToAllBytes(b), 80.0 * 64 * 2);
  const TokenTraffic t = TrafficPerToken(DimsFromSpec(fp32), 64, 80.0 / 64);
  // Plus the two (E, C) = (4, 20) masks the einsums' backward reads, 8 x 128 each as tiled.
  EXPECT_DOUBLE_EQ(a.activation_bytes_per_chip, (t.saved_elements + 2 * 1024.0) * 4 * 64);
  EXPECT_DOUBLE_EQ(b.activation_bytes_per_chip, (t.saved_elements + 2 * 1024.0) * 2 * 64);
  // Plus the gating of the MoE layer (DISPATCH_EINSUM): 4 k E + 4 E C, the (E, C) = (4, 20) masks
  // tiled as 8 x 128 (vector_layout.h): 4*2*4 + 4*8*128 = 4128 elements per token, at the same
  // element size, 128 tokens per chip.
  // And the S x S softmax passes, 5 H S per layer (4 heads, S 64, 2 layers), logits in the
  // activations' dtype unless set.
  const double softmax = 2 * 5 * 4 * 64;
  EXPECT_DOUBLE_EQ(a.elementwise_bytes_per_chip,
                   (t.elementwise_elements + softmax + 4128) * 4 * 128);
  EXPECT_DOUBLE_EQ(b.elementwise_bytes_per_chip,
                   (t.elementwise_elements + softmax + 4128) * 2 * 128);
  // Nothing else moves: FLOPs, state and the fp32 gradient all-reduces.
  EXPECT_DOUBLE_EQ(a.model_flops_per_chip, b.model_flops_per_chip);
  EXPECT_EQ(a.state_bytes_per_chip, b.state_bytes_per_chip);
  EXPECT_DOUBLE_EQ(a.collectives[0].bytes_per_chip, b.collectives[0].bytes_per_chip);
}

TEST(ActivationBytes, AnExplicitSettingWins) {
  JobSpec fp32 = Job("FP32"), bf16 = Job("BF16");
  fp32.mutable_cost_model()->set_activation_bytes(2);
  bf16.mutable_cost_model()->set_activation_bytes(4);
  EXPECT_EQ(ActivationBytes(fp32), 2);
  EXPECT_EQ(ActivationBytes(bf16), 4);
  EXPECT_DOUBLE_EQ(AllToAllBytes(EstimateStepWorkload(fp32, Slice())), 80.0 * 64 * 2);
  EXPECT_DOUBLE_EQ(AllToAllBytes(EstimateStepWorkload(bf16, Slice())), 80.0 * 64 * 4);
}

TEST(ActivationBytes, PlanReportsTheValueUsed) {
  EXPECT_EQ(ComputePlan(Job("FP32")).cost_config.activation_bytes(), 4);
  EXPECT_EQ(ComputePlan(Job("BF16")).cost_config.activation_bytes(), 2);
}

}  // namespace
}  // namespace openmoe
