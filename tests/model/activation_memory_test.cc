// The activation model (model/activation_memory.h) against what a Decoder actually holds after
// training steps, for every remat policy, FFN form and compute dtype: the plan's and the memory
// check's estimates are only as good as this agreement.
#include "model/activation_memory.h"

#include <vector>

#include "core/gemm.h"
#include "gtest/gtest.h"
#include "model/decoder.h"
#include "tests/testing/conditioned_params.h"

namespace openmoe {
namespace {

struct Case {
  Remat remat;
  FfnForm form;
  bool jitter;
  int64_t shared_experts = 0;
  bool bf16 = false;  // BF16 keeps some activations and temporaries as bf16, 2 bytes each
};

class ActivationMemoryTest : public ::testing::TestWithParam<Case> {};

TEST_P(ActivationMemoryTest, EstimateMatchesTheDecoder) {
  const Case c = GetParam();
  JobSpec spec;
  ModelConfig* m = spec.mutable_model();
  m->set_vocab_size(500);
  m->set_vocab_pad_multiple(128);
  m->set_num_layers(4);
  m->set_d_model(64);
  m->set_num_heads(4);
  m->set_head_dim(16);
  m->set_d_ff(128);
  m->set_num_experts(4);
  m->set_moe_interval(2);
  m->set_ffn_form(c.form);
  m->set_num_shared_experts(c.shared_experts);
  spec.mutable_router()->set_group_size(128);
  spec.mutable_train()->set_remat(c.remat);
  spec.mutable_train()->set_compute_dtype(c.bf16 ? BF16 : FP32);
  const ModelDims dims = DimsFromSpec(spec);
  const ParamLayout layout(dims);
  std::vector<float> params(layout.total_size()), grads(layout.total_size());
  InitParams(layout, /*seed=*/2, params.data());
  RoutingConfig routing = RoutingFromSpec(spec, false);
  routing.jitter_noise = c.jitter ? 0.05 : 0.0;
  Decoder decoder(layout, routing);
  Batch batch;
  batch.Resize(8, 64);
  for (int64_t i = 0; i < batch.num_tokens(); ++i) {
    batch.tokens[i] = static_cast<int32_t>((i * 37 + 11) % dims.vocab_size);
    batch.targets[i] = static_cast<int32_t>((i * 13 + 5) % dims.vocab_size);
    batch.loss_weights[i] = 1.0f;
    batch.segment_ids[i] = 1;
  }
  const LossScales scales{.lm_normalizer = 1.0 / 512};
  for (int step = 0; step < 2; ++step) {
    decoder.Forward(params.data(), batch, scales, 4, grads.data());
    decoder.Backward(params.data(), batch, scales, grads.data());
  }
  // The routing's real row counts, which the plan can only bound.
  ActivationShape shape{.rows = batch.rows, .seq_len = batch.seq_len, .jitter = c.jitter,
                        .attention_workers = std::min<int64_t>(GemmThreads(), 8 * 4)};
  for (int64_t l = 0; l < dims.num_layers; ++l) {
    if (const Routing* r = decoder.routing(l)) {
      shape.kept_rows = std::max<double>(shape.kept_rows, r->NumKept());
      for (int64_t e = 0; e < dims.num_experts; ++e) {
        shape.max_block_rows = std::max<double>(
            shape.max_block_rows, r->expert_offsets[e + 1] - r->expert_offsets[e]);
      }
    }
  }
  shape.received_rows = shape.kept_rows;
  const ActivationEstimate est = EstimateActivations(dims, shape);
  const Decoder::Memory got = decoder.memory();
  auto near = [](double estimate, int64_t measured, double rel) {
    return std::abs(estimate - static_cast<double>(measured)) <=
           rel * static_cast<double>(measured) + 4096;
  };
  EXPECT_TRUE(near(est.residual, got.residual, 0.02)) << est.residual << " vs " << got.residual;
  EXPECT_TRUE(near(est.attention, got.attention, 0.02)) << est.attention << " vs " << got.attention;
  EXPECT_TRUE(near(est.ffn, got.ffn, 0.02)) << est.ffn << " vs " << got.ffn;
  // The MoE layers differ in kept rows; the estimate takes the largest for each.
  EXPECT_TRUE(near(est.moe, got.moe, 0.08)) << est.moe << " vs " << got.moe;
  EXPECT_TRUE(near(est.scratch, got.scratch, 0.05)) << est.scratch << " vs " << got.scratch;
}

INSTANTIATE_TEST_SUITE_P(
    Policies, ActivationMemoryTest,
    ::testing::Values(
        Case{REMAT_NONE, FFN_OPENMOE, false}, Case{REMAT_ATTENTION, FFN_OPENMOE, false},
        Case{REMAT_FULL, FFN_OPENMOE, false}, Case{REMAT_NONE, FFN_SWIGLU, true},
        Case{REMAT_FULL, FFN_SWIGLU, true}, Case{REMAT_NONE, FFN_OPENMOE, false, 2},
        Case{REMAT_FULL, FFN_SWIGLU, false, 1}, Case{REMAT_NONE, FFN_OPENMOE, false, 0, true},
        Case{REMAT_ATTENTION, FFN_OPENMOE, false, 0, true},
        Case{REMAT_FULL, FFN_SWIGLU, true, 0, true}, Case{REMAT_NONE, FFN_SWIGLU, false, 2, true}),
    [](const auto& info) {
      return Remat_Name(info.param.remat) + "_" + FfnForm_Name(info.param.form) +
             (info.param.jitter ? "_jitter" : "") +
             (info.param.shared_experts > 0 ? "_shared" + std::to_string(info.param.shared_experts)
                                            : "") +
             (info.param.bf16 ? "_bf16" : "");
    });

}  // namespace
}  // namespace openmoe
