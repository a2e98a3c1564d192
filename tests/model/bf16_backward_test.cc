// The BF16 compute path against the FP32 one on the same batch and parameters.
//
// Tolerance. bf16 keeps 8 significant bits, so one rounding moves a value by at most 2^-9
// relative (RMS ~2^-9 / sqrt(3)). A GEMM of two rounded operands is off by ~2^-9 of its output
// (the independent product errors partly cancel in the sum), and the gradient of the first layer
// goes through ~20 GEMMs forward and backward in this 2-layer model. Those errors add in
// quadrature when independent and linearly at worst, so we allow 16 roundings' worth,
// 16 * 2^-9 = 3.1%, of relative L2 error per gradient tensor; and require at least 2^-14 (not 0:
// an FP32 run would give ~1e-7), so the test fails if the precision does not reach the matmuls.
// The routing is conditioned (router logits spread x40) so that bf16 noise cannot flip a top-2
// choice or a capacity slot; the test checks that it did not, since a flip would make the two
// gradients incomparable. Measured: 0.7% (logits, final norm) to 1.8% for the whole model, 0.5%
// for one MoE layer's output and input gradient.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/bf16.h"
#include "gtest/gtest.h"
#include "model/decoder.h"
#include "model/expert_ffn.h"
#include "model/moe.h"
#include "tests/testing/conditioned_params.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

constexpr double kTolerance = 16.0 / 512;  // 16 roundings of 2^-9
constexpr double kMinDifference = 1.0 / 16384;

JobSpec Spec(ComputeDtype dtype) {
  JobSpec spec;
  ModelConfig* m = spec.mutable_model();
  m->set_vocab_size(61);  // padded to 64
  m->set_vocab_pad_multiple(16);
  m->set_num_layers(2);
  m->set_d_model(32);
  m->set_num_heads(2);
  m->set_head_dim(16);
  m->set_d_ff(48);
  m->set_expert_d_ff(40);
  m->set_num_experts(4);
  m->set_moe_interval(2);  // layer 1 is MoE, with the extra dense FFN
  spec.mutable_router()->set_group_size(16);
  spec.mutable_router()->set_capacity_factor(1.0);  // C = 4 of 8 picks per expert: drops happen
  spec.mutable_router()->set_min_capacity(2);
  spec.mutable_router()->set_aux_loss_weight(0.1);
  spec.mutable_router()->set_z_loss_weight(0.01);
  spec.mutable_loss()->set_output_z_loss_weight(0.01);
  spec.mutable_train()->set_compute_dtype(dtype);
  return spec;
}

Batch MakeBatch(int64_t rows, int64_t seq, int64_t vocab) {
  Batch b;
  b.Resize(rows, seq);
  for (int64_t i = 0; i < rows * seq; ++i) {
    b.tokens[i] = static_cast<int32_t>((i * 37 + 11) % vocab);
    b.targets[i] = static_cast<int32_t>((i * 17 + 5) % vocab);
    b.loss_weights[i] = (i % 7 == 6) ? 0.0f : 1.0f;
    b.segment_ids[i] = (i % seq) < 5 ? 1 : 2;  // every row packs two segments
  }
  return b;
}

struct GradRun {
  DecoderSums sums;
  std::vector<float> grads;
  std::vector<int32_t> routing;  // choice experts and slots of the MoE layer
  int64_t kept = 0;              // the MoE layer's kept assignments
  Decoder::Memory memory;
};

GradRun ForwardBackward(ComputeDtype dtype, const std::vector<float>& params) {
  const JobSpec spec = Spec(dtype);
  const ParamLayout layout(DimsFromSpec(spec));
  const Batch batch = MakeBatch(4, 16, spec.model().vocab_size());
  Decoder decoder(layout, RoutingFromSpec(spec, false));
  LossScales scales;
  double weight = 0;
  for (float w : batch.loss_weights) weight += w;
  scales.lm_normalizer = 1.0 / weight;
  scales.output_z_weight = 0.01;
  scales.load_balance_scale = 0.1 / 4;  // 1 MoE layer, 4 groups
  scales.router_z_scale = 0.01 / 64;
  GradRun run;
  run.grads.assign(layout.total_size(), 0.0f);
  run.sums = decoder.Forward(params.data(), batch, scales, 4, run.grads.data());
  decoder.Backward(params.data(), batch, scales, run.grads.data());
  const Routing* r = decoder.routing(1);
  run.routing = r->choice_expert;
  run.routing.insert(run.routing.end(), r->choice_slot.begin(), r->choice_slot.end());
  run.kept = r->NumKept();
  run.memory = decoder.memory();
  return run;
}

double RelativeL2(const float* got, const float* want, int64_t n) {
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < n; ++i) {
    diff += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    norm += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(diff / norm);
}

// The test model's parameters (seed 5), conditioned so that bf16 noise flips no routing decision.
std::vector<float> ConditionedParams(const ParamLayout& layout) {
  std::vector<float> params(layout.total_size());
  InitParams(layout, /*seed=*/5, params.data());
  testing::ConditionForRoutingTests(layout, 40.0f, &params);
  return params;
}

TEST(Bf16Backward, GradientsMatchFp32WithinBf16Rounding) {
  const ParamLayout layout(DimsFromSpec(Spec(FP32)));
  ASSERT_EQ(DimsFromSpec(Spec(BF16)).precision, GemmPrecision::kBf16);
  const std::vector<float> params = ConditionedParams(layout);
  const GradRun fp32 = ForwardBackward(FP32, params);
  const GradRun bf16 = ForwardBackward(BF16, params);
  ASSERT_EQ(bf16.routing, fp32.routing) << "bf16 noise flipped a routing decision";

  const double loss_rel = std::fabs(bf16.sums.loss - fp32.sums.loss) / fp32.sums.loss;
  EXPECT_LT(loss_rel, 1.0 / 512) << "loss " << bf16.sums.loss << " vs " << fp32.sums.loss;
  EXPECT_GT(loss_rel, 0.0);
  for (const ParamInfo& p : layout.params()) {
    const double rel = RelativeL2(bf16.grads.data() + p.offset, fp32.grads.data() + p.offset,
                                  p.size);
    EXPECT_LE(rel, kTolerance) << p.name;
    EXPECT_GE(rel, kMinDifference) << p.name << ": the bf16 path does not reach it";
  }
}

// What BF16 keeps as bf16 (attention's q, k, v and context, the MoE's dispatched rows: they only
// feed GEMMs) the decoder's account (the memory account's activations) counts at 2 bytes: with
// the same routing, the FP32 account holds exactly 2 bytes more per such value; the rest (the
// residual stream, the FFNs' pre-activations, the routing, the experts' caches) is the same.
TEST(Bf16Backward, AccountCountsTheBf16ActivationsAtTwoBytes) {
  const ParamLayout layout(DimsFromSpec(Spec(FP32)));
  const std::vector<float> params = ConditionedParams(layout);
  const GradRun fp32 = ForwardBackward(FP32, params);
  const GradRun bf16 = ForwardBackward(BF16, params);
  ASSERT_EQ(bf16.routing, fp32.routing) << "bf16 noise flipped a routing decision";
  ASSERT_EQ(bf16.kept, fp32.kept);
  const ModelDims dims = layout.dims();
  const int64_t tokens = 4 * 16, width = dims.AttentionWidth();
  EXPECT_EQ(fp32.memory.attention - bf16.memory.attention,
            dims.num_layers * 4 * tokens * width * 2);
  EXPECT_EQ(fp32.memory.moe - bf16.memory.moe, fp32.kept * dims.d_model * 2);
  EXPECT_EQ(fp32.memory.residual, bf16.memory.residual);
  EXPECT_EQ(fp32.memory.ffn, bf16.memory.ffn);
}

// The router stays fp32 (its logits equal the FP32 layer's bit for bit on the same input), while
// the experts compute in bf16 and hand back bf16 values (outputs forward, input gradients
// backward), as the expert-parallel wire carries them.
TEST(Bf16Backward, MoeRoutesInFp32AndExpertsHandBackBf16) {
  const int64_t t = 32, d = 16, f = 24, e = 4;
  MoeDims dims{.tokens = t, .d_model = d, .expert_d_ff = f, .num_experts = e};
  std::vector<float> x(t * d), dy(t * d), router(d * e), wi0(e * d * 2 * f), wi1(e * d * f),
      wo(e * f * d);
  testing::FillNormal(x.data(), x.size(), 1.0, 1);
  testing::FillNormal(dy.data(), dy.size(), 1.0, 2);
  testing::FillNormal(router.data(), router.size(), 1.0, 3);
  testing::FillNormal(wi0.data(), wi0.size(), 0.3, 4);
  testing::FillNormal(wi1.data(), wi1.size(), 0.3, 5);
  testing::FillNormal(wo.data(), wo.size(), 0.3, 6);
  const MoeWeights w{router.data(), wi0.data(), wi1.data(), wo.data()};
  const RoutingConfig routing{.num_experts = e, .group_size = 16, .capacity_factor = 2.0};

  auto run = [&](GemmPrecision precision, MoeCache* cache, std::vector<float>* y,
                 std::vector<float>* dx) {
    dims.precision = precision;
    y->assign(t * d, 0.0f);
    dx->assign(t * d, 0.0f);
    MoeForward(dims, routing, w, x.data(), cache, y->data());
    std::vector<float> gr(router.size()), g0(wi0.size()), g1(wi1.size()), go(wo.size());
    MoeBackward(dims, w, x.data(), cache, dy.data(), 0.0, 0.0,
                {gr.data(), g0.data(), g1.data(), go.data()}, dx->data());
  };
  MoeCache c32, c16;
  std::vector<float> y32, dx32, y16, dx16;
  run(GemmPrecision::kFp32, &c32, &y32, &dx32);
  run(GemmPrecision::kBf16, &c16, &y16, &dx16);

  ASSERT_EQ(c16.routing.logits.size(), c32.routing.logits.size());
  for (int64_t i = 0; i < c32.routing.logits.size(); ++i) {
    ASSERT_EQ(c16.routing.logits[i], c32.routing.logits[i]) << "router logit " << i;
  }
  ASSERT_EQ(c16.routing.kept_token, c32.routing.kept_token);
  int64_t not_bf16 = 0;
  for (int64_t i = 0; i < c16.expert_out.size(); ++i) {
    not_bf16 += RoundToBf16(c16.expert_out[i]) != c16.expert_out[i];
  }
  EXPECT_EQ(not_bf16, 0) << "expert outputs must be bf16 values";
  // The runner's d dispatched (input gradients of the experts) are bf16 values too: the MoE's
  // dx is their scatter-add plus the router's fp32 term, so check the experts' directly.
  std::vector<float> d_out(c16.expert_out.size()), d_in(c16.expert_out.size(), 0.0f);
  testing::FillNormal(d_out.data(), d_out.size(), 1.0, 7);
  std::vector<float> g0(wi0.size()), g1(wi1.size()), go(wo.size());
  ExpertBlocksBackward(dims, w, {nullptr, g0.data(), g1.data(), go.data()},
                       DispatchBlocks(c16.routing), c16.DispatchedRows(d), c16.expert_ffn,
                       d_out.data(), d_in.data());
  for (float v : d_in) not_bf16 += RoundToBf16(v) != v;
  EXPECT_EQ(not_bf16, 0) << "expert input gradients must be bf16 values";

  // BF16 keeps the dispatched rows as bf16 (2 bytes each), which only feed the experts' GEMMs:
  // given the same rows as floats (the route before), the experts compute the same bits.
  const int64_t kept = c16.routing.NumKept();
  ASSERT_EQ(c16.dispatched.size(), 0);
  ASSERT_EQ(static_cast<int64_t>(c16.dispatched16.size()), kept * d);
  std::vector<float> rows(kept * d), y_rows(kept * d), d_in_rows(kept * d, 0.0f);
  for (int64_t a = 0; a < kept; ++a)
    std::copy_n(x.data() + c16.routing.kept_token[a] * d, d, rows.data() + a * d);
  std::vector<FfnCache> caches;
  ExpertBlocksForward(dims, w, DispatchBlocks(c16.routing), rows.data(), &caches, y_rows.data());
  EXPECT_EQ(y_rows, std::vector<float>(c16.expert_out.data(), c16.expert_out.data() + kept * d));
  std::vector<float> g0_rows(wi0.size()), g1_rows(wi1.size()), go_rows(wo.size());
  ExpertBlocksBackward(dims, w, {nullptr, g0_rows.data(), g1_rows.data(), go_rows.data()},
                       DispatchBlocks(c16.routing), rows.data(), caches, d_out.data(),
                       d_in_rows.data());
  EXPECT_EQ(d_in_rows, d_in);
  EXPECT_EQ(g0_rows, g0);
  EXPECT_EQ(g1_rows, g1);
  EXPECT_EQ(go_rows, go);

  const double y_rel = RelativeL2(y16.data(), y32.data(), t * d);
  const double dx_rel = RelativeL2(dx16.data(), dx32.data(), t * d);
  EXPECT_LT(y_rel, kTolerance);
  EXPECT_GT(y_rel, kMinDifference);
  EXPECT_LT(dx_rel, kTolerance);
  EXPECT_GT(dx_rel, kMinDifference);
}

}  // namespace
}  // namespace openmoe
