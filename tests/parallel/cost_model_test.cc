#include "parallel/cost/cost_model.h"

#include <cmath>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "model/config.h"
#include "model/param_count.h"
#include "model/params.h"
#include "parallel/cost/collective_cost.h"
#include "parallel/cost/hbm_traffic.h"
#include "parallel/cost/step_workload.h"
#include "tests/testing/cost_jobs.h"

namespace openmoe {
namespace {

using testing::FindCollective;
using testing::SliceOf;
using testing::SmallMoeCostJob;

JobSpec LoadConfig(const std::string& name) {
  // tests/parallel/cost_model_test.cc -> repository root.
  const std::filesystem::path root =
      std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
  auto spec = LoadJob({(root / "launch" / "configs" / name).string()}, {});
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : JobSpec();
}

TEST(StepWorkload, FlopsAreSixNPlusAttentionTimesTokensPerChip) {
  const JobSpec spec = SmallMoeCostJob();
  // N by hand: attention 2 layers x 4 x 64 x 64; dense FFN (layer 0) and the extra FFN (layer 1)
  // 4 d d_ff each (OpenMoE wi_0 d x 2 d_ff, wi_1, wo); the top-2 of the experts 2 x 4 d d_ff;
  // router d x E; logits d x 256. The embedding lookup and norm scales are not matmuls.
  const double n = 2 * 4 * 64 * 64 + 2 * (4 * 64 * 128) + 2 * (4 * 64 * 128) + 64 * 4 + 64 * 256;
  const double attention = 12.0 * 2 * 4 * 16 * 64;  // 12 L H hd S
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  EXPECT_EQ(w.tokens_per_chip, 32 * 64 / 16);
  EXPECT_DOUBLE_EQ(w.model_flops_per_chip, (6 * n + attention) * (32 * 64 / 16));
  // The same N as the parameter counts give.
  const ParamLayout layout(DimsFromSpec(spec));
  EXPECT_EQ(CountParams(layout).activated_matmul, static_cast<int64_t>(n));
  // Attention of the one MoE layer: its 4 projections' 6N plus its half of 12 L H hd S.
  EXPECT_DOUBLE_EQ(w.moe_attention_flops_per_chip,
                   (6.0 * 4 * 64 * 64 + attention / 2) * (32 * 64 / 16));
}

TEST(StepWorkload, CollectivesHaveTheirGroupsAndBytes) {
  const JobSpec spec = SmallMoeCostJob();
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  const ParamCounts counts = CountParams(ParamLayout(DimsFromSpec(spec)));
  ASSERT_EQ(w.collectives.size(), 3u);

  const CollectiveWork& shared = FindCollective(w, CollectiveKind::kAllReduceShared);
  EXPECT_EQ(shared.group_size, 16);
  EXPECT_EQ(shared.footprint.Describe(), "4x4 (x ring, y ring)");
  EXPECT_DOUBLE_EQ(shared.bytes_per_chip, 4.0 * (counts.total - counts.expert_total));
  EXPECT_EQ(shared.calls, 1);

  const CollectiveWork& experts = FindCollective(w, CollectiveKind::kAllReduceExperts);
  EXPECT_EQ(experts.group_size, 4);  // 16 chips / ep 4: each expert on 4 chips
  EXPECT_EQ(experts.num_groups, 4);
  EXPECT_EQ(experts.footprint.Describe(), "1x4 (y ring)");  // ep = row width: one column
  EXPECT_DOUBLE_EQ(experts.bytes_per_chip, 4.0 * counts.expert_total / 4);

  const CollectiveWork& a2a = FindCollective(w, CollectiveKind::kAllToAll);
  EXPECT_EQ(a2a.group_size, 4);
  EXPECT_EQ(a2a.num_groups, 4);
  EXPECT_EQ(a2a.footprint.Describe(), "4x1 (x ring)");
  EXPECT_EQ(a2a.calls, 4 * 1 * 2);  // dispatch + combine, fwd + bwd; 1 MoE layer; 2 microbatches
  // 64 tokens per chip per microbatch = 1 group of 64; capacity round(1.25 * 64 / 4) = 20:
  // the padded buffer is 4 x 20 rows of d = 64 bf16.
  EXPECT_DOUBLE_EQ(w.expert_rows_per_token, 80.0 / 64);
  EXPECT_DOUBLE_EQ(a2a.bytes_per_chip, 80.0 * 64 * 2);
}

TEST(StepWorkload, UnpaddedDispatchSendsWhatCanBeKept) {
  JobSpec spec = SmallMoeCostJob();
  spec.mutable_cost_model()->set_padded_dispatch(false);
  // min(top_k * G, E * C) = min(128, 80).
  EXPECT_DOUBLE_EQ(
      FindCollective(EstimateStepWorkload(spec, SliceOf(spec)), CollectiveKind::kAllToAll).bytes_per_chip,
      80.0 * 64 * 2);
  spec.mutable_router()->set_capacity_factor(4.0);  // C = 64: E * C = 256 > 128
  EXPECT_DOUBLE_EQ(
      FindCollective(EstimateStepWorkload(spec, SliceOf(spec)), CollectiveKind::kAllToAll).bytes_per_chip,
      128.0 * 64 * 2);
  spec.mutable_router()->set_dropless(true);
  spec.mutable_cost_model()->set_padded_dispatch(true);
  EXPECT_DOUBLE_EQ(
      FindCollective(EstimateStepWorkload(spec, SliceOf(spec)), CollectiveKind::kAllToAll).bytes_per_chip,
      128.0 * 64 * 2);
}

TEST(StepWorkload, HbmTrafficAndActivationsFollowTheirPerTokenFormulas) {
  const JobSpec spec = SmallMoeCostJob();
  const ModelDims dims = DimsFromSpec(spec);
  const double r = 80.0 / 64;
  const TokenTraffic t = TrafficPerToken(dims, 64, r);
  const double d = 64, a = 64, hs = 4 * 64, f = 128, e = 4, v = 256;
  const double attention = 11 * d + 8 * a;  // the S x S softmax apart (attention_scores.h)
  const double ffn = 11 * d + 11 * f;
  const double moe = 14 * d + 5 * e + 5 * r * d + r * 11 * f;
  EXPECT_DOUBLE_EQ(t.elementwise_elements, 2 * attention + 2 * ffn + moe + 9 * d + 3 * v);
  // What a recomputation runs again: RoPE (attention), or each layer's forward column.
  EXPECT_DOUBLE_EQ(t.attention_forward_elements, 2 * 4 * a);
  EXPECT_DOUBLE_EQ(t.layer_forward_elements, 2 * (5 * d + 4 * a) + 2 * (5 * d + 4 * f) +
                                                 (6 * d + 2 * e + 3 * r * d + r * 4 * f));
  const double saved = 2 * (2 * d + 4 * a + hs) + 2 * (2 * d + 4 * f) +
                       (2 * d + e + 2 * r * d + r * 4 * f) + 2 * d + v;
  EXPECT_DOUBLE_EQ(t.saved_elements, saved);

  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  // Plus the gating of the one MoE layer (EINSUM, the default): 4 k E + 4 E C elements per token,
  // the (E, C) = (4, 20) masks tiled as 8 x 128 (vector_layout.h): 4*2*4 + 4*8*128 = 4128, bf16,
  // 128 tokens per chip.
  EXPECT_DOUBLE_EQ(w.gating_bytes_per_chip, 4128.0 * 2 * 128);
  // Plus the S x S softmax passes in bf16: 5 H S per layer (2 layers), and the attention
  // matmuls' S x S operands, 6 H S per layer, apart.
  EXPECT_DOUBLE_EQ(w.attention_score_bytes_per_chip, 2 * 5 * hs * 2 * 128);
  EXPECT_DOUBLE_EQ(w.attention_operand_bytes_per_chip, 2 * 6 * hs * 2 * 128);
  EXPECT_DOUBLE_EQ(w.elementwise_bytes_per_chip,
                   (t.elementwise_elements + 2 * 5 * hs + 4128.0) * 2 * 128);
  // Plus the two masks the einsums' backward reads, 2 x 1024 tiled elements per token.
  EXPECT_DOUBLE_EQ(w.activation_bytes_per_chip, (t.saved_elements + 2 * 1024.0) * 2 * 64);
  const ChipMemory memory = MemoryPerChip(ParamLayout(dims), spec.optimizer(), 4);
  EXPECT_EQ(w.state_bytes_per_chip, memory.total_bytes);
  // Each of the chip's 2 cores (topology.cores_per_chip default) updates its own replica.
  EXPECT_EQ(w.cores_per_chip, 2);
  EXPECT_DOUBLE_EQ(w.optimizer_bytes_per_chip, 2 * memory.params * 4.0 * (4 + 2));
}

TEST(CostModel, StepIsTheSumOfItsPartsAndGivesThroughputAndMfu) {
  const JobSpec spec = SmallMoeCostJob();
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  const CostModelConfig& c = spec.cost_model();
  const CostBreakdown b = PredictStepTime(w, c);
  const double e = c.matmul_efficiency();
  // Plus what the MXU's 128 x 128 tiles leave empty at d 64, head_dim 16 (issue 26).
  EXPECT_GT(w.mxu_padding_flops_per_chip, 0);
  EXPECT_GT(b.attention_extra_seconds, 0);
  EXPECT_DOUBLE_EQ(b.compute_seconds, (w.model_flops_per_chip + w.dispatch_flops_per_chip +
                                       w.capacity_flops_per_chip + w.mxu_padding_flops_per_chip) /
                                              (123e12 * e) +
                                          b.attention_extra_seconds);
  EXPECT_DOUBLE_EQ(b.memory_seconds,
                   (w.elementwise_bytes_per_chip + w.optimizer_bytes_per_chip) / 900e9);
  const LinkParams link{82e9, 1e-6};
  const CollectiveWork& a2a = FindCollective(w, CollectiveKind::kAllToAll);
  EXPECT_DOUBLE_EQ(b.all_to_all_seconds,
                   8 * AllToAllSeconds(a2a.footprint, a2a.bytes_per_chip,
                                       LinkParams{82e9 * c.all_to_all_efficiency(), 1e-6}));
  double all_reduce = 0;
  for (const CollectiveWork& cw : w.collectives) {
    if (cw.kind != CollectiveKind::kAllToAll) {
      all_reduce += AllReduceSeconds(cw.footprint, cw.bytes_per_chip, link);
    }
  }
  EXPECT_DOUBLE_EQ(b.all_reduce_seconds, all_reduce);
  // The parts sum to the unoverlapped step; the prediction overlaps the gradient all-reduce
  // (train.overlap_grad_reduce, default on; cost_terms_test.cc).
  EXPECT_DOUBLE_EQ(b.unoverlapped_step_seconds, b.compute_seconds + b.memory_seconds +
                                                    b.all_to_all_seconds + b.all_reduce_seconds);
  EXPECT_DOUBLE_EQ(b.step_seconds, b.overlapped_step_seconds);
  EXPECT_DOUBLE_EQ(b.tokens_per_second, 32 * 64 / b.step_seconds);
  EXPECT_DOUBLE_EQ(b.mfu, w.model_flops_per_chip / (b.step_seconds * 123e12));
  EXPECT_LT(b.mfu, e);  // never above the matmul efficiency
  ASSERT_EQ(b.collectives.size(), 3u);
  EXPECT_EQ(b.collectives[2].placement, "4x1 (x ring)");
  EXPECT_DOUBLE_EQ(b.collectives[2].seconds, 8 * b.collectives[2].seconds_per_call);
  EXPECT_TRUE(b.fits_in_hbm);
}

TEST(CostModel, OverlapHidesTheAllToAllBehindAttentionOnly) {
  JobSpec spec = SmallMoeCostJob();
  const CostBreakdown off = PredictStepTime(spec, SliceOf(spec));
  EXPECT_EQ(off.all_to_all_hidden_seconds, 0);
  spec.mutable_cost_model()->set_overlap_all_to_all_with_attention(true);
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  const CostBreakdown on = PredictStepTime(w, spec.cost_model());
  const double attention =
      w.moe_attention_flops_per_chip / (123e12 * spec.cost_model().matmul_efficiency());
  EXPECT_DOUBLE_EQ(on.all_to_all_hidden_seconds, std::min(off.all_to_all_seconds, attention));
  EXPECT_DOUBLE_EQ(on.all_to_all_seconds + on.all_to_all_hidden_seconds, off.all_to_all_seconds);
  EXPECT_DOUBLE_EQ(on.step_seconds, off.step_seconds - on.all_to_all_hidden_seconds);
  EXPECT_DOUBLE_EQ(on.compute_seconds, off.compute_seconds);
}

TEST(CostModel, MoreLinksPerNeighbourSpeedUpOnlyCollectives) {
  JobSpec spec = SmallMoeCostJob();
  const CostBreakdown four = PredictStepTime(spec, SliceOf(spec));
  spec.mutable_cost_model()->set_ici_links_per_chip(8);
  spec.mutable_cost_model()->set_hop_latency(0);
  const CostBreakdown eight = PredictStepTime(spec, SliceOf(spec));
  spec.mutable_cost_model()->set_ici_links_per_chip(4);
  const CostBreakdown four_no_latency = PredictStepTime(spec, SliceOf(spec));
  EXPECT_DOUBLE_EQ(eight.all_reduce_seconds, four_no_latency.all_reduce_seconds / 2);
  EXPECT_DOUBLE_EQ(eight.compute_seconds, four.compute_seconds);
}

TEST(CostModel, OpenMoe8bAndDenseModelsOnRealSlices) {
  const JobSpec spec = LoadConfig("openmoe_8b_32e.pbtxt");
  const CostBreakdown b = PredictStepTime(spec, SliceOf(spec));
  EXPECT_GT(b.step_seconds, b.compute_seconds);
  EXPECT_GT(b.mfu, 0.3);
  // Below the matmul efficiency (0.92 since issue 26's second refit; 0.64 today).
  EXPECT_LT(b.mfu, spec.cost_model().matmul_efficiency());
  EXPECT_FALSE(b.fits_in_hbm);  // 26 GiB of fp32 state before any activation
  ASSERT_EQ(b.collectives.size(), 3u);
  EXPECT_EQ(b.collectives[2].calls, 4 * 4 * 4);  // 4 MoE layers x 4 microbatches
  EXPECT_EQ(b.collectives[2].placement, "16x2 (x ring, y line)");

  JobSpec dense = LoadConfig("openllama_base.pbtxt");
  const CostBreakdown d = PredictStepTime(dense, SliceOf(dense));
  EXPECT_EQ(d.all_to_all_seconds, 0);
  EXPECT_EQ(d.collectives.size(), 1u);
}

TEST(CostModel, AllToAllGrowsWithTheSliceAtFixedBytesPerChip) {
  // Weak scaling with one expert per chip and the expert group spanning the slice (dropless, so
  // the buffer does not depend on E): the bytes per chip stay fixed and the all-to-all follows the
  // bisection (64: 16 links, 128: 16, 256: 32, 512: 32); the shared all-reduce per byte stays
  // nearly flat. (Hop latency off: this model is so small that latency would dominate.)
  double previous_a2a = 0, first_all_reduce_per_byte = 0, first_a2a_bytes = 0;
  for (int64_t chips : {64, 128, 256, 512}) {
    JobSpec spec = SmallMoeCostJob();
    const int64_t x = chips == 128 ? 8 : chips == 512 ? 16 : static_cast<int64_t>(std::sqrt(chips));
    spec.mutable_topology()->set_num_chips(chips);
    spec.mutable_topology()->set_torus_x(x);
    spec.mutable_topology()->set_torus_y(chips / x);
    spec.mutable_model()->set_num_experts(chips);
    spec.mutable_mesh()->set_expert_parallel(chips);
    spec.mutable_train()->set_batch_rows(2 * chips);
    spec.mutable_router()->set_dropless(true);  // top_k * G rows per group whatever E is
    spec.mutable_cost_model()->set_hop_latency(0);
    ASSERT_TRUE(ValidateJob(spec).ok()) << ValidateJob(spec);
    const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
    const CollectiveWork& a2a = FindCollective(w, CollectiveKind::kAllToAll);
    if (first_a2a_bytes == 0) first_a2a_bytes = a2a.bytes_per_chip;
    EXPECT_DOUBLE_EQ(a2a.bytes_per_chip, first_a2a_bytes) << chips;
    const CostBreakdown b = PredictStepTime(w, spec.cost_model());
    const double a2a_per_call = b.collectives[2].seconds_per_call;
    // The links reach all_to_all_efficiency of their bandwidth (the calibrated default).
    const double link = 82e9 * spec.cost_model().all_to_all_efficiency();
    EXPECT_DOUBLE_EQ(a2a_per_call, static_cast<double>(chips) * a2a.bytes_per_chip / 4 /
                                       (a2a.footprint.BisectionLinks() * link));
    EXPECT_GE(a2a_per_call, previous_a2a) << chips;
    previous_a2a = a2a_per_call;
    const double all_reduce_per_byte = b.collectives[0].seconds / b.collectives[0].bytes_per_chip;
    if (first_all_reduce_per_byte == 0) first_all_reduce_per_byte = all_reduce_per_byte;
    EXPECT_NEAR(all_reduce_per_byte / first_all_reduce_per_byte, 1.0, 0.1) << chips;
  }
  // 64 (8x8) -> 512 (16x32): 8x the chips, 4x the all-to-all time.
  const double link = 82e9 * SmallMoeCostJob().cost_model().all_to_all_efficiency();
  EXPECT_DOUBLE_EQ(previous_a2a / (64 * first_a2a_bytes / 4 / (16 * link)), 4);
}

TEST(StepWorkloadModelAxis, ModelAllReducesHaveTheirGroupsBytesAndCalls) {
  const JobSpec spec = SmallMoeCostJob({"mesh.model_parallel=2"});
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  EXPECT_EQ(w.model_parallel, 2);
  EXPECT_EQ(w.num_shards, 8);
  EXPECT_EQ(w.tokens_per_chip, 32 * 64 / 8);
  EXPECT_EQ(w.tokens_per_chip_microbatch, 128);
  ASSERT_EQ(w.collectives.size(), 6u);

  // Activations after attention's wo (2 layers), the dense FFN (layer 0) and the extra FFN
  // (layer 1), the embedding; backward the 4 sub-blocks' input gradients and d(final hidden):
  // 4 + 4 + 2 = 10 per microbatch, of 128 tokens x 64 x 2 bytes (bf16).
  const CollectiveWork& act = FindCollective(w, CollectiveKind::kAllReduceModel);
  EXPECT_EQ(act.group_size, 2);
  EXPECT_EQ(act.num_groups, 8);
  EXPECT_EQ(act.footprint.Describe(), "2x1 (x line)");  // chips 0, 1
  EXPECT_DOUBLE_EQ(act.bytes_per_chip, 128.0 * 64 * 2);
  EXPECT_EQ(act.calls, 10 * 2);
  // Expert outputs and their input gradients: 2 groups x 80 buffer rows x 64 x 2 bytes, 2 per MoE
  // layer per microbatch.
  const CollectiveWork& experts = FindCollective(w, CollectiveKind::kAllReduceModelExperts);
  EXPECT_EQ(experts.footprint.Describe(), "2x1 (x line)");
  EXPECT_DOUBLE_EQ(experts.bytes_per_chip, 2.0 * 80 * 64 * 2);
  EXPECT_EQ(experts.calls, 2 * 1 * 2);
  // Cross-entropy: max, sum-exp, target logit: 3 x 128 fp32 per microbatch.
  const CollectiveWork& loss = FindCollective(w, CollectiveKind::kAllReduceModelLoss);
  EXPECT_DOUBLE_EQ(loss.bytes_per_chip, 128.0 * 4);
  EXPECT_EQ(loss.calls, 3 * 2);

  // Gradients: shared over the 8 chips of one model coord (0, 2, ..., 14: two columns of the
  // 4-wide rows, 2 apart, closing the x ring), experts over the 2 chips with the same model and
  // expert coords (0 and 8: one column, rows 0 and 2), the all-to-all over 4 shards' chips of
  // one model coord (0, 2, 4, 6).
  const CollectiveWork& shared = FindCollective(w, CollectiveKind::kAllReduceShared);
  EXPECT_EQ(shared.group_size, 8);
  EXPECT_EQ(shared.num_groups, 2);
  EXPECT_EQ(shared.footprint.Describe(), "2x4 (x ring stride 2, y ring)");
  const CollectiveWork& replicas = FindCollective(w, CollectiveKind::kAllReduceExperts);
  EXPECT_EQ(replicas.group_size, 2);
  EXPECT_EQ(replicas.num_groups, 8);
  EXPECT_EQ(replicas.footprint.Describe(), "1x2 (y ring stride 2)");
  const CollectiveWork& a2a = FindCollective(w, CollectiveKind::kAllToAll);
  EXPECT_EQ(a2a.group_size, 4);
  EXPECT_EQ(a2a.num_groups, 4);
  EXPECT_EQ(a2a.footprint.Describe(), "2x2 (x ring stride 2, y line)");
  EXPECT_DOUBLE_EQ(a2a.bytes_per_chip, 2.0 * 80 * 64 * 2);  // the shard's whole rows

  // Seconds by hand: a line of 2 in x is one ring link per direction pair (r = 1, stride 1):
  // T = 2 (2 - 1) / 2 * B / W + 2 (2 - 1) h, W = 82 GB/s x 4 / 4, h = 1 us.
  const CostBreakdown b = PredictStepTime(w, spec.cost_model());
  auto hand = [](double bytes) { return bytes / 82e9 + 2e-6; };
  double model = 0;
  for (const CollectiveCost& c : b.collectives) {
    if (c.kind == CollectiveKind::kAllReduceModel) {
      EXPECT_DOUBLE_EQ(c.seconds_per_call, hand(128.0 * 64 * 2));
    } else if (c.kind == CollectiveKind::kAllReduceModelExperts) {
      EXPECT_DOUBLE_EQ(c.seconds_per_call, hand(2.0 * 80 * 64 * 2));
    } else if (c.kind == CollectiveKind::kAllReduceModelLoss) {
      EXPECT_DOUBLE_EQ(c.seconds_per_call, hand(128.0 * 4));
    } else {
      continue;
    }
    model += c.seconds;
  }
  EXPECT_DOUBLE_EQ(model, 20 * hand(16384) + 4 * hand(20480) + 6 * hand(512));
  EXPECT_DOUBLE_EQ(b.model_all_reduce_seconds, model);
  EXPECT_GT(b.all_reduce_seconds, b.model_all_reduce_seconds);  // includes it, and the gradients
  EXPECT_DOUBLE_EQ(b.unoverlapped_step_seconds, b.compute_seconds + b.memory_seconds +
                                                    b.all_to_all_seconds + b.all_reduce_seconds);
}

TEST(StepWorkloadModelAxis, ParamsPerChipAreTheSplitOnesHalvedAndTheRestWhole) {
  const JobSpec spec = SmallMoeCostJob({"mesh.model_parallel=2"});
  const ModelDims dims = DimsFromSpec(spec);
  // A naive count of one chip's piece at model_parallel 2: heads, mlp and vocab halved; norm
  // scales, router and the d_model dims whole; each chip's experts are 4 / ep 4 = 1 of each.
  const double d = 64, a = 64 / 2.0, f = 128 / 2.0, e = 4, v = dims.padded_vocab_size / 2.0;
  const double attention = 4 * d * a + d;              // wq wk wv wo + attn_norm, per layer
  const double ffn = d * 2 * f + d * f + f * d + d;    // wi_0 (a, b halves), wi_1, wo + mlp_norm
  const double one_expert = d * 2 * f + d * f + f * d;
  const double shared = v * d + 2 * attention + 2 * ffn + (d + d * e) + d + d * v;
  const double expert = one_expert;  // layer 1's one local expert
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  EXPECT_DOUBLE_EQ(FindCollective(w, CollectiveKind::kAllReduceShared).bytes_per_chip, 4 * shared);
  EXPECT_DOUBLE_EQ(FindCollective(w, CollectiveKind::kAllReduceExperts).bytes_per_chip, 4 * expert);
  // Adafactor's optimizer traffic reads every held parameter: 4 bytes x (4 + 2 x 1 extra mb), on
  // each of the chip's 2 cores (a replica per core).
  EXPECT_DOUBLE_EQ(w.optimizer_bytes_per_chip, 2 * (shared + expert) * 4 * (4 + 2));
  // Twice the tokens per chip of model_parallel 1 (a shard is 2 chips), half the FLOPs of each.
  const StepWorkload one = EstimateStepWorkload(SmallMoeCostJob(), SliceOf(SmallMoeCostJob()));
  EXPECT_EQ(w.tokens_per_chip, 2 * one.tokens_per_chip);
  EXPECT_DOUBLE_EQ(w.model_flops_per_chip, one.model_flops_per_chip);
}

TEST(StepWorkloadModelAxis, ActivationsAndTrafficUseThePieceSizes) {
  const JobSpec spec = SmallMoeCostJob({"mesh.model_parallel=2"});
  ModelDims piece = DimsFromSpec(spec);
  piece.num_heads /= 2;
  piece.d_ff /= 2;
  piece.expert_d_ff /= 2;
  piece.padded_vocab_size /= 2;
  // 2 groups of 64 tokens per shard per microbatch, 80 buffer rows each.
  const TokenTraffic t = TrafficPerToken(piece, 64, 80.0 / 64);
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  EXPECT_DOUBLE_EQ(w.activation_bytes_per_chip, (t.saved_elements + 2 * 1024.0) * 2 * 128);
  // Plus the gating, d_model-wide so whole on each chip: 4 k E + 4 x (E, C) tiled = 4128 per
  // token, bf16.
  // And the softmax passes of the chip's 2 heads: 5 H S per layer, 2 layers.
  EXPECT_DOUBLE_EQ(w.elementwise_bytes_per_chip,
                   (t.elementwise_elements + 2 * 5 * 2 * 64 + 4128.0) * 2 * 256);
  // Fewer saved elements per token than the whole model's, more tokens per chip.
  EXPECT_LT(t.saved_elements, TrafficPerToken(DimsFromSpec(spec), 64, 80.0 / 64).saved_elements);
}

TEST(StepWorkloadModelAxis, OpenMoe8bFitsOnlyWithTheModelAxis) {
  JobSpec spec = LoadConfig("openmoe_8b_32e.pbtxt");
  EXPECT_FALSE(PredictStepTime(spec, SliceOf(spec)).fits_in_hbm);
  // Per core (16 GiB, a replica each): at model_parallel 2 a core holds half the piece's
  // parameters of mp 1 but its whole fp32 state and optimizer, ~19 GiB: too much; mp 4 holds ~13.5.
  spec.mutable_mesh()->set_model_parallel(2);
  ASSERT_TRUE(ValidateJob(spec).ok()) << ValidateJob(spec);
  EXPECT_FALSE(PredictStepTime(spec, SliceOf(spec)).fits_in_hbm);
  spec.mutable_mesh()->set_model_parallel(4);
  ASSERT_TRUE(ValidateJob(spec).ok()) << ValidateJob(spec);
  const CostBreakdown b = PredictStepTime(spec, SliceOf(spec));
  EXPECT_TRUE(b.fits_in_hbm) << b.memory_bytes;
  EXPECT_LE(b.memory_bytes, int64_t{16} << 30);
  EXPECT_GT(b.model_all_reduce_seconds, 0);
}

TEST(DispatchEinsum, FlopsOfAKnownGroup) {
  // G = 4, E = 2, C = 3, d = 5: each einsum 2 G E C d = 240; forward dispatch + combine, backward
  // three (input gradient, expert-output gradient, combine-weight gradient): 5 x 240 = 1200.
  EXPECT_DOUBLE_EQ(EinsumDispatchFlopsPerGroup(4, 2, 3, 5), 1200);
}

TEST(DispatchEinsum, SmallMoeCountsEveryGroupAndGatherCountsNone) {
  // SmallMoeCostJob: 1 MoE layer, 2 microbatches of 1 group of 64 tokens per chip, E = 4, C = 20, d = 64:
  // 2 groups x 10 x 64 x 4 x 20 x 64 = 6,553,600 FLOPs per chip.
  JobSpec spec = SmallMoeCostJob();
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  EXPECT_DOUBLE_EQ(w.dispatch_flops_per_chip, 6553600);
  spec.mutable_cost_model()->set_dispatch(DISPATCH_GATHER);
  const StepWorkload g = EstimateStepWorkload(spec, SliceOf(spec));
  EXPECT_EQ(g.dispatch_flops_per_chip, 0);
  // The experts' buffer: 80 rows per 64 tokens where the model FLOPs count top-2 (128 choices):
  // 6 x one expert's 4 x 64 x 128 parameters (OpenMoE form: wi_0 holds 2 d_ff) x (1.25 - 2)
  // per token, 128 tokens.
  EXPECT_DOUBLE_EQ(w.capacity_flops_per_chip, 6.0 * 4 * 64 * 128 * (1.25 - 2) * 128);
  // Gating without the masks: 4 k E = 32 elements per token, 128 tokens, bf16.
  EXPECT_DOUBLE_EQ(g.gating_bytes_per_chip, 32.0 * 2 * 128);
}

TEST(Remat, FullAddsOneForwardAndKeepsLayerInputs) {
  JobSpec spec = SmallMoeCostJob();
  spec.mutable_cost_model()->set_remat(REMAT_FULL);
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  // One more forward: a third of 6N + 12 LHhdS, and the einsums' forward 4 of 10.
  EXPECT_DOUBLE_EQ(w.remat_flops_per_chip,
                   w.model_flops_per_chip / 3 + 0.4 * w.dispatch_flops_per_chip +
                       w.capacity_flops_per_chip / 3);
  const TokenTraffic t = TrafficPerToken(DimsFromSpec(spec), 64, 80.0 / 64);
  // 2 layers of d = 64 inputs, plus one layer's saved set while it is recomputed; 64 tokens.
  EXPECT_DOUBLE_EQ(t.layer_input_elements, 2 * 64);
  // The layer being recomputed keeps the two (4, 20) masks too, 2 x 1024 tiled elements per token
  // for the one MoE layer, averaged over the 2 layers.
  EXPECT_DOUBLE_EQ(w.activation_bytes_per_chip,
                   (2 * 64 + t.saved_elements / 2 + 2 * 1024.0 / 2) * 2 * 64);
  // The gating's forward passes run again: 3 x (2 k E + 2 x 1024) per token, 128 tokens, bf16.
  EXPECT_DOUBLE_EQ(w.gating_bytes_per_chip, 3 * (2 * 2 * 4 + 2 * 1024.0) * 2 * 128);
  const CostBreakdown b = PredictStepTime(w, spec.cost_model());
  EXPECT_DOUBLE_EQ(b.compute_seconds, (w.model_flops_per_chip + w.dispatch_flops_per_chip +
                                       w.capacity_flops_per_chip + w.remat_flops_per_chip +
                                       w.mxu_padding_flops_per_chip) /
                                              (123e12 * spec.cost_model().matmul_efficiency()) +
                                          b.attention_extra_seconds);
  // MFU counts model FLOPs only.
  EXPECT_DOUBLE_EQ(b.mfu, w.model_flops_per_chip / (b.step_seconds * 123e12));
}

TEST(Remat, AttentionDropsItsInternals) {
  JobSpec spec = SmallMoeCostJob();
  spec.mutable_cost_model()->set_remat(REMAT_ATTENTION);
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  const TokenTraffic t = TrafficPerToken(DimsFromSpec(spec), 64, 80.0 / 64);
  // 2 layers x (4 A + H S) = 2 x (256 + 256).
  EXPECT_DOUBLE_EQ(t.attention_internal_elements, 2 * (4 * 64 + 4 * 64));
  // The one MoE layer's two masks stay (2 x 1024 tiled elements per token).
  EXPECT_DOUBLE_EQ(w.activation_bytes_per_chip, (t.saved_elements - 1024 + 2 * 1024) * 2 * 64);
  EXPECT_GT(w.remat_flops_per_chip, 0);
  EXPECT_LT(w.remat_flops_per_chip, w.model_flops_per_chip / 3);
}

TEST(CostModel, FitIsPerCoreAReplicaEachAndHalfTheActivations) {
  // By hand: 32 GiB per chip, 2 cores: 16 GiB a core. State 10 GiB (a replica per core), the
  // chip's activations 8 GiB: a core holds 10 + 4 = 14 GiB <= 16: fits.
  constexpr int64_t kGiB = int64_t{1} << 30;
  StepWorkload w;
  w.cores_per_chip = 2;
  w.state_bytes_per_chip = 10 * kGiB;
  w.activation_bytes_per_chip = 8.0 * kGiB;
  const CostModelConfig config;
  CostBreakdown b = PredictStepTime(w, config);
  EXPECT_EQ(b.hbm_capacity_bytes, 16 * kGiB);
  EXPECT_EQ(b.activation_bytes, 4 * kGiB);
  EXPECT_EQ(b.memory_bytes, 14 * kGiB);
  EXPECT_TRUE(b.fits_in_hbm);
  // 14 GiB of the chip's activations: 10 + 7 = 17 GiB > 16: does not fit, though 24 < 32.
  w.activation_bytes_per_chip = 14.0 * kGiB;
  b = PredictStepTime(w, config);
  EXPECT_EQ(b.memory_bytes, 17 * kGiB);
  EXPECT_FALSE(b.fits_in_hbm);
  // One core per chip: 10 + 14 = 24 GiB of 32.
  w.cores_per_chip = 1;
  b = PredictStepTime(w, config);
  EXPECT_EQ(b.memory_bytes, 24 * kGiB);
  EXPECT_EQ(b.hbm_capacity_bytes, 32 * kGiB);
  EXPECT_TRUE(b.fits_in_hbm);
}

TEST(CostModel, ValidationNamesTheField) {
  CostModelConfig c;
  EXPECT_TRUE(ValidateCostModel(c).ok());
  c.set_matmul_efficiency(1.5);
  EXPECT_NE(ValidateCostModel(c).message().find("cost_model.matmul_efficiency=1.5"),
            std::string::npos);
  c = CostModelConfig();
  c.set_ici_link_bandwidth(0);
  EXPECT_NE(ValidateCostModel(c).message().find("cost_model.ici_link_bandwidth=0"),
            std::string::npos);
  c = CostModelConfig();
  c.set_all_to_all_efficiency(0);
  EXPECT_NE(ValidateCostModel(c).message().find("cost_model.all_to_all_efficiency=0"),
            std::string::npos);
}

}  // namespace
}  // namespace openmoe
