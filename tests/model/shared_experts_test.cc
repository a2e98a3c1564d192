// Shared experts (model.num_shared_experts): their parameters' layout and sharding, and their
// output against an independent route: the routed experts' own machinery, with every token sent
// to every expert at weight one, computes the same layer.
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/decoder.h"
#include "tests/testing/tiny_decoder_spec.h"

namespace openmoe {
namespace {

TEST(SharedExpertsLayout, ReplicatedOverExpertsSplitOnMlp) {
  for (const FfnForm form : {FFN_OPENMOE, FFN_SWIGLU}) {
    const ModelDims dims = DimsFromSpec(testing::TinyDecoderSpec(form, 4, 3));
    const int64_t d = 8, sf = 3 * 6, halves = form == FFN_OPENMOE ? 2 : 1;
    // Experts 2..3 of 4, model piece 1 of 2.
    const ParamLayout piece(
        dims, {.first_expert = 2, .num_local_experts = 2, .model_parts = 2, .model_index = 1});
    const ParamInfo& wi0 = piece.Get("layers.1.moe.shared.wi_0");
    const ParamInfo& wi1 = piece.Get("layers.1.moe.shared.wi_1");
    const ParamInfo& wo = piece.Get("layers.1.moe.shared.wo");
    for (const ParamInfo* p : {&wi0, &wi1, &wo}) {
      EXPECT_FALSE(p->is_expert) << p->name;
      EXPECT_EQ(p->component, Component::kSharedExperts) << p->name;
      EXPECT_TRUE(p->model_split()) << p->name;
      EXPECT_EQ(p->axes[p->model_dim], LogicalAxis::kMlp) << p->name;
      // Shared parameters sit before the expert tensors (reduced with the other shared ones).
      EXPECT_LT(p->offset, piece.expert_offset()) << p->name;
    }
    EXPECT_EQ(wi0.global_shape, (std::vector<int64_t>{d, halves * sf}));
    EXPECT_EQ(wi0.shape, (std::vector<int64_t>{d, halves * sf / 2}));
    EXPECT_EQ(wi1.shape, (std::vector<int64_t>{d, sf / 2}));
    EXPECT_EQ(wo.shape, (std::vector<int64_t>{sf / 2, d}));
    // The piece computes on half of the S * Fe hidden units.
    EXPECT_EQ(piece.local_dims().SharedDff(), sf / 2);
    // Dense layers have none.
    EXPECT_EQ(piece.Find("layers.0.moe.shared.wi_0"), nullptr);
  }
  // S = 0: no shared tensor at all.
  const ParamLayout none(DimsFromSpec(testing::TinyDecoderSpec(FFN_OPENMOE, 4, 0)));
  for (const ParamInfo& p : none.params())
    EXPECT_EQ(p.name.find("shared"), std::string::npos) << p.name;
}

Batch SmallBatch(int64_t vocab) {
  Batch b;
  b.Resize(2, 8);
  for (int64_t i = 0; i < 16; ++i) {
    b.tokens[i] = static_cast<int32_t>((i * 7 + 3) % vocab);
    b.targets[i] = static_cast<int32_t>((i * 5 + 1) % vocab);
    b.loss_weights[i] = 1.0f;
    b.segment_ids[i] = 1;
  }
  return b;
}

float* ParamData(const ParamLayout& layout, std::vector<float>* params, const std::string& name) {
  return params->data() + layout.Get(name).offset;
}

double RelativeL2(const float* got, const float* want, int64_t n) {
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < n; ++i) {
    diff += (got[i] - want[i]) * static_cast<double>(got[i] - want[i]);
    norm += want[i] * static_cast<double>(want[i]);
  }
  return std::sqrt(diff / norm);
}

// Model A: S = 2 shared experts, 2 routed experts whose wo is zero (they add nothing). Model B:
// no shared experts; its 2 routed experts are A's shared experts, every token routed to both
// (top-2 of 2, dropless) at gate 1/2 (a zero router), with wo doubled. Both MoE sub-blocks
// compute sum_s Shared_s(norm x), so losses and gradients agree to fp32 summation order; this
// also checks the column layout of the concatenated shared tensors (model/params.h).
void ExpectSharedEqualsRoutedToAll(FfnForm form) {
  constexpr int64_t kS = 2, kFe = 6, kD = 8;
  JobSpec spec_a = testing::TinyDecoderSpec(form, /*experts=*/2, kS);
  JobSpec spec_b = testing::TinyDecoderSpec(form, /*experts=*/2, 0);
  for (JobSpec* s : {&spec_a, &spec_b}) {
    s->mutable_router()->set_top_k(2);
    s->mutable_router()->set_dropless(true);
  }
  const ModelDims dims_a = DimsFromSpec(spec_a), dims_b = DimsFromSpec(spec_b);
  const ParamLayout a(dims_a), b(dims_b);
  std::vector<float> pa(a.total_size()), pb(b.total_size());
  // Values depend on (seed, name, index): the tensors both models have start equal.
  InitParams(a, 5, pa.data());
  InitParams(b, 5, pb.data());
  const std::string l = "layers.1.moe.";
  const int64_t halves = form == FFN_OPENMOE ? 2 : 1;
  std::fill_n(ParamData(a, &pa, l + "router"), kD * 2, 0.0f);
  std::fill_n(ParamData(b, &pb, l + "router"), kD * 2, 0.0f);
  std::fill_n(ParamData(a, &pa, l + "experts.wo"), 2 * kFe * kD, 0.0f);
  const float* s_wi0 = ParamData(a, &pa, l + "shared.wi_0");
  const float* s_wi1 = ParamData(a, &pa, l + "shared.wi_1");
  const float* s_wo = ParamData(a, &pa, l + "shared.wo");
  float* e_wi0 = ParamData(b, &pb, l + "experts.wi_0");
  float* e_wi1 = ParamData(b, &pb, l + "experts.wi_1");
  float* e_wo = ParamData(b, &pb, l + "experts.wo");
  for (int64_t s = 0; s < kS; ++s) {
    for (int64_t i = 0; i < kD; ++i) {
      for (int64_t h = 0; h < halves; ++h) {
        for (int64_t j = 0; j < kFe; ++j) {
          e_wi0[(s * kD + i) * halves * kFe + h * kFe + j] =
              s_wi0[i * halves * kS * kFe + h * kS * kFe + s * kFe + j];
        }
      }
      for (int64_t j = 0; j < kFe; ++j)
        e_wi1[(s * kD + i) * kFe + j] = s_wi1[i * kS * kFe + s * kFe + j];
    }
    for (int64_t j = 0; j < kFe; ++j)
      for (int64_t c = 0; c < kD; ++c)
        e_wo[(s * kFe + j) * kD + c] = 2 * s_wo[(s * kFe + j) * kD + c];
  }

  const Batch batch = SmallBatch(dims_a.vocab_size);
  const LossScales scales{.lm_normalizer = 1.0 / 16,
                          .output_z_weight = 1e-3,
                          .load_balance_scale = 0.01,
                          .router_z_scale = 1e-3};
  std::vector<float> ga(a.total_size(), 0.0f), gb(b.total_size(), 0.0f);
  Decoder da(a, RoutingFromSpec(spec_a, false)), db(b, RoutingFromSpec(spec_b, false));
  const double loss_a = da.Forward(pa.data(), batch, scales, 4, ga.data()).loss;
  da.Backward(pa.data(), batch, scales, ga.data());
  const double loss_b = db.Forward(pb.data(), batch, scales, 4, gb.data()).loss;
  db.Backward(pb.data(), batch, scales, gb.data());
  EXPECT_NEAR(loss_a, loss_b, 1e-6 * std::fabs(loss_b));
  // The shared experts did act: without them A's MoE adds nothing.
  std::vector<float> pa_off = pa;
  std::fill_n(ParamData(a, &pa_off, l + "shared.wo"), kS * kFe * kD, 0.0f);
  Decoder off(a, RoutingFromSpec(spec_a, false));
  EXPECT_GT(std::fabs(off.Forward(pa_off.data(), batch, scales).loss - loss_a), 1e-4);

  // Gradients: the embedding's, and each shared expert's against its routed twin (wo's scaled by
  // the gate 1/2, wi's unchanged: the gate 1/2 and the doubled wo cancel).
  const ParamInfo& emb = a.Get("embedding");
  EXPECT_LT(RelativeL2(ga.data() + emb.offset, gb.data() + b.Get("embedding").offset, emb.size),
            1e-5);
  const float* gs_wi1 = ParamData(a, &ga, l + "shared.wi_1");
  const float* gs_wo = ParamData(a, &ga, l + "shared.wo");
  const float* ge_wi1 = ParamData(b, &gb, l + "experts.wi_1");
  const float* ge_wo = ParamData(b, &gb, l + "experts.wo");
  std::vector<float> want_wi1(kD * kS * kFe), want_wo(kS * kFe * kD);
  for (int64_t s = 0; s < kS; ++s) {
    for (int64_t i = 0; i < kD; ++i)
      for (int64_t j = 0; j < kFe; ++j)
        want_wi1[i * kS * kFe + s * kFe + j] = ge_wi1[(s * kD + i) * kFe + j];
    for (int64_t k = 0; k < kFe * kD; ++k) want_wo[s * kFe * kD + k] = 2 * ge_wo[s * kFe * kD + k];
  }
  EXPECT_LT(RelativeL2(gs_wi1, want_wi1.data(), kD * kS * kFe), 1e-5);
  EXPECT_LT(RelativeL2(gs_wo, want_wo.data(), kS * kFe * kD), 1e-5);
}

TEST(SharedExperts, AreExpertsEveryTokenTakesOpenMoeFfn) {
  ExpectSharedEqualsRoutedToAll(FFN_OPENMOE);
}
TEST(SharedExperts, AreExpertsEveryTokenTakesSwiGlu) { ExpectSharedEqualsRoutedToAll(FFN_SWIGLU); }

}  // namespace
}  // namespace openmoe
