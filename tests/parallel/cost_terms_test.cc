// The cost model's terms added for small models (issue 26) and the overlapped gradient reduction
// (issue 23), each against a figure derived by hand.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "model/config.h"
#include "model/param_count.h"
#include "model/params.h"
#include "parallel/cost/attention_scores.h"
#include "parallel/cost/collective_cost.h"
#include "parallel/cost/cost_model.h"
#include "parallel/cost/encoder_decoder.h"
#include "parallel/cost/grad_overlap.h"
#include "parallel/cost/hbm_traffic.h"
#include "parallel/cost/mxu_tiles.h"
#include "parallel/cost/step_workload.h"
#include "parallel/cost/vector_layout.h"
#include "tests/testing/cost_jobs.h"

namespace openmoe {
namespace {

using testing::SliceOf;
using testing::SmallMoeCostJob;

TEST(MxuTiles, UtilisationIsTheFilledFractionOfEachTiledDim) {
  EXPECT_DOUBLE_EQ(MxuUtilisation(768, 2048), 1.0);  // T5-Base's d_model, d_ff: 6 and 16 tiles
  EXPECT_DOUBLE_EQ(MxuUtilisation(64, 512), 0.5);    // head_dim 64 fills half the array
  EXPECT_DOUBLE_EQ(MxuUtilisation(100, 200), (100.0 / 128) * (200.0 / 256));
  EXPECT_DOUBLE_EQ(MxuUtilisation(129, 128), 129.0 / 256);
}

TEST(MxuTiles, SmallMoeWeightPaddingFlopsByHand) {
  // Per token, 6 K N (1/u - 1) per weight matrix:
  //   wq, wk, wv, wo [64, 64]: u = 1/4, 6*4096*3 = 73,728 each, 4 per layer x 2 layers = 589,824
  //   FFN (layer 0's dense, layer 1's extra): wi_0 [64, 256] u = 1/2: 98,304; wi_1 [64, 128] and
  //     wo [128, 64] u = 1/2: 49,152 each; 196,608 per FFN, 2 FFNs = 393,216
  //   experts, the same three shapes, top-2: 2 x 196,608 = 393,216
  //   router [64, 4]: u = 1/2 x 4/128 = 1/64: 6*256*63 = 96,768
  //   logits [64, 256]: u = 1/2: 98,304 (the embedding is a lookup, the norms no matmul)
  const JobSpec spec = SmallMoeCostJob();
  const ParamLayout layout(DimsFromSpec(spec));
  const double by_hand = 589824.0 + 393216 + 393216 + 96768 + 98304;
  EXPECT_DOUBLE_EQ(MxuWeightPaddingFlopsPerToken(layout), by_hand);
  // In the step: times the chip's 128 tokens, in compute time, not in MFU.
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  EXPECT_DOUBLE_EQ(w.mxu_padding_flops_per_chip, by_hand * 128);
  // The attention matmuls: 12 L H hd S = 12*2*4*16*64 = 98,304 FLOPs per token at u(16, 64) =
  // 1/8 x 1/2 = 1/16: 16x their FLOP time (2.7 us) against their operands' 6 H S x 2 layers x 2
  // bytes x 128 tokens = 786,432 bytes (0.87 us at 900 GB/s): tile-bound, 15 A / (P e) extra.
  EXPECT_DOUBLE_EQ(w.attention_flops_per_chip, 98304.0 * 128);
  EXPECT_DOUBLE_EQ(w.attention_mxu_utilisation, 1.0 / 16);
  EXPECT_DOUBLE_EQ(w.attention_operand_bytes_per_chip, 786432);
  const double pe = 123e12 * spec.cost_model().matmul_efficiency();
  const CostBreakdown b = PredictStepTime(w, spec.cost_model());
  EXPECT_FALSE(b.attention_hbm_bound);
  EXPECT_DOUBLE_EQ(b.attention_matmul_seconds, 16 * 98304.0 * 128 / pe);
  EXPECT_NEAR(b.attention_extra_seconds, 15 * 98304.0 * 128 / pe, 1e-18);
  EXPECT_NEAR(b.compute_seconds,
              (w.model_flops_per_chip + w.dispatch_flops_per_chip + w.capacity_flops_per_chip +
               by_hand * 128) /
                      pe +
                  15 * 98304.0 * 128 / pe,
              1e-15);
  EXPECT_DOUBLE_EQ(b.mfu, w.model_flops_per_chip / (b.step_seconds * 123e12));
  // At 1 GB/s of HBM the operands take longer (786 us): HBM-bound, B / M - A / (P e) extra.
  CostModelConfig slow = spec.cost_model();
  slow.set_hbm_bandwidth(1e9);
  const CostBreakdown h = PredictStepTime(w, slow);
  EXPECT_TRUE(h.attention_hbm_bound);
  EXPECT_DOUBLE_EQ(h.attention_matmul_seconds, 786432 / 1e9);
  EXPECT_DOUBLE_EQ(h.attention_extra_seconds, 786432 / 1e9 - 98304.0 * 128 / pe);
}

TEST(MxuTiles, FilledTilesCostNothingAndRematPadsAlike) {
  // Every dim a multiple of 128 (d 128, heads 2 x 128, d_ff 256, 128 experts, vocab 256, seq 128):
  // no padding, and the attention matmuls at u = 1.
  JobSpec spec = SmallMoeCostJob();
  for (const char* s : {"model.d_model=128", "model.num_heads=2", "model.head_dim=128",
                        "model.d_ff=256", "model.num_experts=128", "mesh.expert_parallel=16",
                        "train.seq_len=128", "router.group_size=128"}) {
    ASSERT_TRUE(ApplySet(s, &spec).ok()) << s;
  }
  ASSERT_TRUE(ValidateJob(spec).ok()) << ValidateJob(spec);
  const StepWorkload filled = EstimateStepWorkload(spec, SliceOf(spec));
  EXPECT_EQ(filled.mxu_padding_flops_per_chip, 0);
  EXPECT_EQ(filled.attention_mxu_utilisation, 1);
  // REMAT_FULL recomputes a third more model FLOPs: their padding too, and the attention's
  // forward (a third more of its FLOPs, 2 of its 6 H S operands).
  JobSpec small = SmallMoeCostJob();
  const StepWorkload plain = EstimateStepWorkload(small, SliceOf(small));
  small.mutable_cost_model()->set_remat(REMAT_FULL);
  const StepWorkload full = EstimateStepWorkload(small, SliceOf(small));
  EXPECT_DOUBLE_EQ(full.mxu_padding_flops_per_chip,
                   plain.mxu_padding_flops_per_chip *
                       (1 + full.remat_flops_per_chip / full.model_flops_per_chip));
  EXPECT_DOUBLE_EQ(full.attention_flops_per_chip, plain.attention_flops_per_chip * 4 / 3);
  EXPECT_DOUBLE_EQ(full.attention_operand_bytes_per_chip,
                   plain.attention_operand_bytes_per_chip * 8 / 6);
}

TEST(AttentionScores, BytesPerScoreElementByHand) {
  // bf16 logits, no bias: what the model counted before issue 26's fp32 term: the attention
  // matmuls' operands 6 H S (QK^T writes s, PV reads p; dO V^T writes dp, P^T dO reads p, dS K
  // and dS^T Q read ds), the softmax 5 H S (forward 2, backward 3), 2 bytes each.
  const ScoreBytes bf16 = AttentionScoreBytes(2, 2, false);
  EXPECT_DOUBLE_EQ(bf16.operand_forward + bf16.operand_backward, 12);
  EXPECT_DOUBLE_EQ(bf16.elementwise_forward, 4);
  EXPECT_DOUBLE_EQ(bf16.elementwise_backward, 6);
  EXPECT_DOUBLE_EQ(bf16.qk_cast, 0);
  // Mesh TensorFlow's float32_logits with T5's bias: forward s written in fp32 (4), p read (2);
  // backward dp written (2), p read (2), ds read twice (8). Elementwise forward: bias add reads s
  // and the bias, writes s (12); softmax reads s, writes fp32 weights (8); the cast reads them,
  // writes bf16 (6): 26. Backward: the cast reads dp, writes fp32 (6); softmax reads the weights
  // and dp, writes ds (12); the bias's gradient reads ds (4): 22. q and k cast: 4 x (4 + 2).
  const ScoreBytes t5 = AttentionScoreBytes(4, 2, true);
  EXPECT_DOUBLE_EQ(t5.operand_forward, 6);
  EXPECT_DOUBLE_EQ(t5.operand_backward, 12);
  EXPECT_DOUBLE_EQ(t5.elementwise_forward, 26);
  EXPECT_DOUBLE_EQ(t5.elementwise_backward, 22);
  EXPECT_DOUBLE_EQ(t5.qk_cast, 24);
}

TEST(AttentionScores, InTheStepByHand) {
  // SmallMoeCostJob: 2 layers x 4 heads x S 64 = 512 score elements per token, 128 tokens per chip,
  // attention width 64; fp32 logits with a bias, REMAT_ATTENTION (the forward runs twice).
  JobSpec spec = SmallMoeCostJob();
  spec.mutable_cost_model()->set_attention_logits_bytes(4);
  spec.mutable_cost_model()->set_attention_position_bias(true);
  spec.mutable_cost_model()->set_remat(REMAT_ATTENTION);
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  EXPECT_DOUBLE_EQ(w.attention_score_bytes_per_chip,
                   ((26.0 * 2 + 22) * 512 + 24.0 * 2 * 64) * 128);
  EXPECT_DOUBLE_EQ(w.attention_operand_bytes_per_chip, (6.0 * 2 + 12) * 512 * 128);
  // The recomputed RoPE on q and k: 4 A per layer, bf16.
  EXPECT_DOUBLE_EQ(w.recomputed_bytes_per_chip, 2 * 4 * 64.0 * 2 * 128);
  // Unset, the logits take the activations' bytes.
  spec.mutable_cost_model()->clear_attention_logits_bytes();
  EXPECT_EQ(AttentionLogitsBytes(spec), 2);
  spec.mutable_cost_model()->set_attention_logits_bytes(0);
  EXPECT_FALSE(ValidateCostModel(spec.cost_model()).ok());
}

TEST(EncoderDecoder, DeltaPerStandInTokenByHand) {
  // 2 + 2 layers, d 64, 4 heads x 16 (A 64), vocabulary 256; inputs S 64, targets t 16: the
  // stand-in holds n = (2 x 64 + 2 x 16) / 4 = 40 tokens per example. Per example:
  //   cross projections   2 x 6 x 2 x 64 x 64 x (16 + 64) = 7,864,320
  //   logits              6 x 64 x 256 x (16 - 40)        = -2,359,296
  //   attention           2 x 16 x 12 x 64 x 64 + 2 x 16 x 12 x 64 x (16 - 64) = 393,216
  //   self S x S elements 2 x 16 x 4 x (16 - 64) = -6,144; cross 2 x 16 x 4 x 64 = 8,192
  //   elementwise         2 x 16 x 11 x 64 + 3 x 256 x (16 - 40) = 4,096
  ModelDims dims;
  dims.num_layers = 4;
  dims.d_model = 64;
  dims.num_heads = 4;
  dims.head_dim = 16;
  dims.vocab_size = dims.padded_vocab_size = 256;
  const EncoderDecoderDelta e =
      EncoderDecoderPerToken(dims, 64, {.encoder_layers = 2, .target_length = 16});
  EXPECT_DOUBLE_EQ(e.projection_flops, 7864320.0 / 40);
  EXPECT_DOUBLE_EQ(e.matmul_flops, (7864320.0 - 2359296) / 40);
  EXPECT_DOUBLE_EQ(e.attention_flops, 393216.0 / 40);
  EXPECT_DOUBLE_EQ(e.self_score_elements, -6144.0 / 40);
  EXPECT_DOUBLE_EQ(e.cross_score_elements, 8192.0 / 40);
  EXPECT_DOUBLE_EQ(e.elementwise_elements, 4096.0 / 40);
  // bf16 S x S passes, no remat: 5 bytes x 2 per element elementwise, 6 x 2 operands.
  const ScoreBytes b = AttentionScoreBytes(2, 2, false);
  EXPECT_DOUBLE_EQ(EncoderDecoderScoreBytes(e, b, b, 0), 10 * (8192.0 - 6144) / 40);
  EXPECT_DOUBLE_EQ(EncoderDecoderOperandBytes(e, b, b, 0), 12 * (8192.0 - 6144) / 40);
}

TEST(EncoderDecoder, InTheStepItIsTheRealModelsFlops) {
  // SmallMoeCostJob (2 layers, S 64, vocabulary 256, 4 x 16 heads, d 64) as 1 + 1 layers with 16
  // targets: the model FLOPs grow by the delta x 128 tokens per chip.
  JobSpec spec = SmallMoeCostJob();
  const StepWorkload plain = EstimateStepWorkload(spec, SliceOf(spec));
  spec.mutable_cost_model()->set_encoder_layers(1);
  spec.mutable_cost_model()->set_decoder_target_length(16);
  ASSERT_TRUE(ValidateJob(spec).ok()) << ValidateJob(spec);
  const StepWorkload w = EstimateStepWorkload(spec, SliceOf(spec));
  const EncoderDecoderDelta e =
      EncoderDecoderPerToken(DimsFromSpec(spec), 64, {.encoder_layers = 1, .target_length = 16});
  EXPECT_DOUBLE_EQ(w.encoder_decoder_flops_per_chip, (e.matmul_flops + e.attention_flops) * 128);
  EXPECT_NEAR(w.model_flops_per_chip - plain.model_flops_per_chip,
              w.encoder_decoder_flops_per_chip, 1e-6);
  EXPECT_NEAR(w.attention_flops_per_chip - plain.attention_flops_per_chip,
              e.attention_flops * 128, 1e-6);
  // A decoder with no layers or targets longer than the inputs is rejected, naming the field.
  spec.mutable_cost_model()->set_encoder_layers(2);
  EXPECT_NE(ValidateJob(spec).ToString().find("cost_model.encoder_layers=2"), std::string::npos);
  spec.mutable_cost_model()->set_encoder_layers(1);
  spec.mutable_cost_model()->set_decoder_target_length(65);
  EXPECT_NE(ValidateJob(spec).ToString().find("cost_model.decoder_target_length=65"),
            std::string::npos);
}

TEST(VectorLayout, TheTwoMinorDimsPadToEightByOneHundredTwentyEight) {
  EXPECT_DOUBLE_EQ(TiledElements(128, 8), 128.0 * 128);    // Switch-Base's masks: C = 8, 16x
  EXPECT_DOUBLE_EQ(TiledElements(128, 128), 128.0 * 128);  // a full tile row: no padding
  EXPECT_DOUBLE_EQ(TiledElements(4, 20), 8.0 * 128);
  EXPECT_DOUBLE_EQ(TiledElements(2048, 129), 2048.0 * 256);
  // In the step: SmallMoeCostJob's one MoE layer, 4 k E + 4 x tiled (E, C) = 32 + 4 x 1024 elements per
  // token, bf16, 128 tokens per chip.
  const JobSpec spec = SmallMoeCostJob();
  EXPECT_DOUBLE_EQ(EstimateStepWorkload(spec, SliceOf(spec)).gating_bytes_per_chip,
                   (32.0 + 4 * 1024) * 2 * 128);
}

TEST(HbmTraffic, RecomputationRunsTheForwardColumnAgain) {
  // REMAT_FULL runs every layer's forward elementwise work again (hbm_traffic.h's forward
  // column), REMAT_NONE nothing; the S x S passes are in attention_score_bytes.
  JobSpec spec = SmallMoeCostJob();
  const TokenTraffic t = TrafficPerToken(DimsFromSpec(spec), 64, 80.0 / 64);
  spec.mutable_cost_model()->set_remat(REMAT_NONE);
  EXPECT_DOUBLE_EQ(EstimateStepWorkload(spec, SliceOf(spec)).recomputed_bytes_per_chip, 0);
  spec.mutable_cost_model()->set_remat(REMAT_FULL);
  EXPECT_DOUBLE_EQ(EstimateStepWorkload(spec, SliceOf(spec)).recomputed_bytes_per_chip,
                   t.layer_forward_elements * 2 * 128);
}

// Closed forms of the bucket schedule; bucket seconds: 10 ms per shared byte, 20 ms per expert one.
double Linear(double shared, double expert) { return 0.01 * shared + 0.02 * expert; }

TEST(GradOverlap, BucketsWaitForTheirLastByteAndForEachOther) {
  // Parts final at 0, 5 s and 10 s (window 10 s) of 100 bytes each; buckets of 150:
  // bucket 1 = part 0 + half of part 1, ready at 5 s, 1.5 s long: ends 6.5 s;
  // bucket 2 = the other half + part 2, ready at 10 s: ends 11.5 s; exposed 1.5 s.
  const std::vector<GradPart> parts = {{0.0, 100, 0}, {0.5, 100, 0}, {1.0, 100, 0}};
  GradOverlap o = ScheduleGradReduce(parts, 150, 10, Linear);
  EXPECT_EQ(o.buckets, 2);
  EXPECT_DOUBLE_EQ(o.reduce_seconds, 3.0);
  EXPECT_DOUBLE_EQ(o.finish_seconds, 11.5);
  EXPECT_DOUBLE_EQ(o.exposed_seconds, 1.5);
  // Buckets of 100: 1 s each, ready at 0, 5, 10: ends 1, 6, 11: exposed 1 s (the last bucket).
  o = ScheduleGradReduce(parts, 100, 10, Linear);
  EXPECT_EQ(o.buckets, 3);
  EXPECT_DOUBLE_EQ(o.exposed_seconds, 1.0);
  // A short window: the first bucket alone (ready at 0) takes 1 s of a 0.5 s window; the others
  // queue behind it: ends 1, then 2, 3 (ready at 0.25, 0.5): exposed 2.5 s.
  o = ScheduleGradReduce(parts, 100, 0.5, Linear);
  EXPECT_DOUBLE_EQ(o.finish_seconds, 3.0);
  EXPECT_DOUBLE_EQ(o.exposed_seconds, 2.5);
  // One bucket larger than everything: the blocking reduction, all exposed.
  for (double huge : {1e9, 1e30}) {
    o = ScheduleGradReduce(parts, huge, 10, Linear);
    EXPECT_EQ(o.buckets, 1);
    EXPECT_DOUBLE_EQ(o.exposed_seconds, 3.0);
  }
}

TEST(GradOverlap, BucketEdgesFallInsideATensorAndSplitSharedFromExpertBytes) {
  // One part of 250 shared bytes in buckets of 100: 100, 100, 50.
  GradOverlap o = ScheduleGradReduce({{1.0, 250, 0}}, 100, 0, Linear);
  EXPECT_EQ(o.buckets, 3);
  EXPECT_DOUBLE_EQ(o.reduce_seconds, 2.5);
  // 30 shared + 40 expert bytes in buckets of 50: (30 s + 20 e) = 0.3 + 0.4 s, then 20 e = 0.4 s.
  o = ScheduleGradReduce({{1.0, 30, 40}}, 50, 0, Linear);
  EXPECT_EQ(o.buckets, 2);
  EXPECT_DOUBLE_EQ(o.reduce_seconds, 1.1);
}

TEST(GradOverlap, SmallMoePartsInBackwardOrder) {
  const JobSpec spec = SmallMoeCostJob();
  const ParamLayout layout(DimsFromSpec(spec));
  const std::vector<GradPart> parts = GradPartsInBackwardOrder(layout, 64, 4, 4.0);
  // Logits' weight (final before the backward), logits' backward with the final norm, layer 1,
  // layer 0, the embedding.
  ASSERT_EQ(parts.size(), 5u);
  EXPECT_EQ(parts[0].final_fraction, 0);
  EXPECT_DOUBLE_EQ(parts[0].shared_bytes, 64.0 * 256 * 4);
  // The backward's time in proportion to training FLOPs per token, which sum to PaLM's total.
  const double total = TrainingFlopsPerToken(layout, 64).total;
  EXPECT_DOUBLE_EQ(parts[1].final_fraction, 6.0 * 64 * 256 / total);
  EXPECT_DOUBLE_EQ(parts[1].shared_bytes, 64.0 * 4);  // final_norm.scale
  // Layer 1: attention 4 x 64 x 64 + its 12 H hd S share, the extra FFN 4 d d_ff, top-2 of the
  // experts, the router.
  const double layer1 =
      6.0 * (4 * 64 * 64 + 4 * 64 * 128 + 2 * 4 * 64 * 128 + 64 * 4) + 12.0 * 4 * 16 * 64;
  EXPECT_NEAR(parts[2].final_fraction, (6.0 * 64 * 256 + layer1) / total, 1e-15);
  EXPECT_DOUBLE_EQ(parts[2].expert_bytes, 4.0 * 4 * (4 * 64 * 128) / 4);  // E x 4 d d_ff / ep
  EXPECT_NEAR(parts[3].final_fraction, 1.0, 1e-12);
  EXPECT_EQ(parts[3].expert_bytes, 0);
  EXPECT_DOUBLE_EQ(parts[4].final_fraction, 1.0);
  EXPECT_DOUBLE_EQ(parts[4].shared_bytes, 256.0 * 64 * 4);  // the embedding, last
  // Every byte once: the all-reduces' own totals.
  const ParamCounts counts = CountParams(layout);
  double shared = 0, expert = 0;
  for (const GradPart& p : parts) {
    shared += p.shared_bytes;
    expert += p.expert_bytes;
  }
  EXPECT_DOUBLE_EQ(shared, 4.0 * (counts.total - counts.expert_total));
  EXPECT_DOUBLE_EQ(expert, 4.0 * counts.expert_total / 4);
  // With the step's tokens, the embedding sends the rows they are expected to touch: 100 tokens
  // drawn uniformly from 256 rows touch 256 (1 - (1 - 1/256)^100) ~ 256 (1 - e^(-100/256)).
  const std::vector<GradPart> sparse = GradPartsInBackwardOrder(layout, 64, 4, 4.0, 100);
  double touched = 256;
  for (int i = 0; i < 100; ++i) touched *= 1 - 1.0 / 256;
  EXPECT_NEAR(sparse[4].shared_bytes / (64 * 4), 256 - touched, 0.2);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(sparse[i].shared_bytes, parts[i].shared_bytes);
}

TEST(GradOverlap, StepHidesWhatTheBackwardCovers) {
  // By hand: 3 s of compute (a 2 s backward), no memory traffic, B bytes over SmallMoeCostJob's 4x4
  // shared group, half final before the backward and half at its end. Buckets of B / 2: the
  // first reduces at once (r < 2 s), the second after the backward: exposed r, the step 3 + r
  // against the blocking 3 + R.
  const JobSpec spec = SmallMoeCostJob();
  const StepWorkload small = EstimateStepWorkload(spec, SliceOf(spec));
  StepWorkload w;
  w.microbatches = 1;
  w.model_flops_per_chip = 3 * 123e12 * 0.6;
  const double bytes = 64e6;
  CollectiveWork shared = small.collectives[0];
  ASSERT_EQ(shared.kind, CollectiveKind::kAllReduceShared);
  shared.bytes_per_chip = bytes;
  w.collectives = {shared};
  w.grad_parts = {{0.0, bytes / 2, 0}, {1.0, bytes / 2, 0}};
  w.grad_bucket_bytes = bytes / 2;
  w.overlap_grad_reduce = true;
  CostModelConfig config;
  config.set_matmul_efficiency(0.6);
  const LinkParams link{82e9, 1e-6};
  const double whole = AllReduceSeconds(shared.footprint, bytes, link);
  const double half = AllReduceSeconds(shared.footprint, bytes / 2, link);
  ASSERT_LT(half, 2.0);
  CostBreakdown b = PredictStepTime(w, config);
  EXPECT_DOUBLE_EQ(b.backward_seconds, 2.0);
  EXPECT_DOUBLE_EQ(b.grad_reduce_seconds, whole);
  EXPECT_EQ(b.grad_buckets, 2);
  EXPECT_NEAR(b.grad_reduce_exposed_seconds, half, 1e-12);
  EXPECT_DOUBLE_EQ(b.unoverlapped_step_seconds, 3.0 + whole);
  EXPECT_NEAR(b.overlapped_step_seconds, 3.0 + half, 1e-12);
  EXPECT_NEAR(b.step_seconds, 3.0 + half, 1e-12);
  // Off: the blocking step is the prediction; the overlapped one is still reported.
  w.overlap_grad_reduce = false;
  b = PredictStepTime(w, config);
  EXPECT_DOUBLE_EQ(b.step_seconds, 3.0 + whole);
  EXPECT_NEAR(b.overlapped_step_seconds, 3.0 + half, 1e-12);
  // 4 microbatches: only the last one's backward (0.5 s) is a window. The first bucket ends at
  // `half`, the second starts at max(0.5, half): exposed max(0.5, half) + half - 0.5.
  w.overlap_grad_reduce = true;
  w.microbatches = 4;
  b = PredictStepTime(w, config);
  EXPECT_DOUBLE_EQ(b.backward_seconds, 0.5);
  EXPECT_NEAR(b.grad_reduce_exposed_seconds, std::max(0.5, half) + half - 0.5, 1e-12);
}

TEST(GradOverlap, SmallMoeOverlappedIsTheBlockingStepLessWhatIsHidden) {
  JobSpec spec = SmallMoeCostJob();
  const CostBreakdown on = PredictStepTime(spec, SliceOf(spec));
  EXPECT_TRUE(on.overlap_grad_reduce);  // the default
  EXPECT_DOUBLE_EQ(on.step_seconds, on.overlapped_step_seconds);
  EXPECT_DOUBLE_EQ(
      on.overlapped_step_seconds,
      on.unoverlapped_step_seconds - on.grad_reduce_seconds + on.grad_reduce_exposed_seconds);
  EXPECT_GT(on.grad_reduce_exposed_seconds, 0);  // the embedding's bucket comes last
  EXPECT_DOUBLE_EQ(on.tokens_per_second, 32 * 64 / on.overlapped_step_seconds);
  spec.mutable_train()->set_overlap_grad_reduce(false);
  const CostBreakdown off = PredictStepTime(spec, SliceOf(spec));
  EXPECT_DOUBLE_EQ(off.step_seconds, off.unoverlapped_step_seconds);
  EXPECT_DOUBLE_EQ(off.unoverlapped_step_seconds, on.unoverlapped_step_seconds);
}

TEST(GradOverlap, BadBucketSizeIsRejectedNamingTheField) {
  JobSpec spec = SmallMoeCostJob();
  spec.mutable_train()->set_grad_bucket_mb(0);
  const absl::Status status = ValidateJob(spec);
  EXPECT_NE(status.message().find("train.grad_bucket_mb=0"), std::string::npos) << status;
  spec.mutable_train()->set_grad_bucket_mb(-2);
  EXPECT_FALSE(ValidateJob(spec).ok());
}

}  // namespace
}  // namespace openmoe
