// The whole model's backward against finite differences of its forward, with MoE layers (drops
// included, shared experts or not), packed segments, padding weights, and every loss term
// switched on.
#include "model/decoder.h"

#include <cstring>
#include <vector>

#include "core/check.h"
#include "gtest/gtest.h"
#include "tests/testing/conditioned_params.h"
#include "tests/testing/grad_check.h"
#include "tests/testing/tiny_decoder_spec.h"

namespace openmoe {
namespace {

JobSpec TinySpec(FfnForm form, int64_t shared_experts = 0) {
  JobSpec spec = testing::TinyDecoderSpec(form, /*experts=*/4, shared_experts);
  spec.mutable_router()->set_capacity_factor(1.0);  // C = max(3, round(1.0 * 8 / 4)) = 3: drops happen
  spec.mutable_router()->set_min_capacity(3);
  // Weights large enough to matter in the gradient check.
  spec.mutable_router()->set_aux_loss_weight(0.3);
  spec.mutable_router()->set_z_loss_weight(0.05);
  spec.mutable_loss()->set_output_z_loss_weight(0.02);
  return spec;
}

Batch TinyBatch(int64_t vocab) {
  Batch b;
  b.Resize(2, 8);
  for (int64_t i = 0; i < 16; ++i) {
    b.tokens[i] = static_cast<int32_t>((i * 7 + 3) % vocab);
    b.targets[i] = static_cast<int32_t>((i * 5 + 1) % vocab);
    b.loss_weights[i] = (i % 5 == 4) ? 0.0f : 1.0f;  // some positions carry no target
    b.segment_ids[i] = i < 8 ? (i < 3 ? 1 : 2) : 1;  // row 0 packs two segments
  }
  return b;
}

// Routing choices and kept slots of every MoE layer: a finite difference is only meaningful when
// the perturbation leaves them unchanged.
std::vector<int32_t> RoutingSignature(const Decoder& decoder, const ModelDims& dims) {
  std::vector<int32_t> sig;
  for (int64_t l = 0; l < dims.num_layers; ++l) {
    if (const Routing* r = decoder.routing(l)) {
      sig.insert(sig.end(), r->choice_expert.begin(), r->choice_expert.end());
      sig.insert(sig.end(), r->choice_slot.begin(), r->choice_slot.end());
    }
  }
  return sig;
}

void CheckWholeModel(FfnForm form, int64_t shared_experts = 0) {
  const JobSpec spec = TinySpec(form, shared_experts);
  const ModelDims dims = DimsFromSpec(spec);
  const ParamLayout layout(dims);
  std::vector<float> params(layout.total_size());
  InitParams(layout, /*seed=*/3, params.data());
  // Spread the router's logits so top-2 margins dwarf the finite-difference step, and scale the
  // embedding down so activations stay O(1).
  testing::ConditionForRoutingTests(layout, 60.0f, &params);
  const Batch batch = TinyBatch(dims.vocab_size);
  Decoder decoder(layout, RoutingFromSpec(spec, false));
  LossScales scales;
  scales.lm_normalizer = 1.0 / 13.0;  // 16 positions, 3 with weight 0
  scales.output_z_weight = spec.loss().output_z_loss_weight();
  scales.load_balance_scale = spec.router().aux_loss_weight() / (1 * 2);
  scales.router_z_scale = spec.router().z_loss_weight() / (1 * 16);

  std::vector<float> grads(layout.total_size(), 0.0f);
  const DecoderSums base = decoder.Forward(params.data(), batch, scales, 4, grads.data());
  decoder.Backward(params.data(), batch, scales, grads.data());
  const std::vector<int32_t> signature = RoutingSignature(decoder, dims);
  // The test only means something if capacity actually drops assignments.
  int dropped = 0;
  for (int64_t l = 0; l < dims.num_layers; ++l)
    if (const Routing* r = decoder.routing(l))
      for (int32_t s : r->choice_slot) dropped += s < 0;
  EXPECT_GT(dropped, 0);
  EXPECT_GT(base.router[1].load_balance, 0.0);

  auto loss = [&] {
    const double l = decoder.Forward(params.data(), batch, scales).loss;
    EXPECT_EQ(RoutingSignature(decoder, dims), signature) << "a perturbation changed the routing";
    return l;
  };
  testing::GradCheckOptions opt;
  opt.step = 2e-3;  // small: keeps the routing fixed; fp32 noise ~1e-7 * 4 / 2e-3 = 2e-4 < atol
  opt.coords = 6;
  if (shared_experts > 0) {
    EXPECT_NE(layout.Find("layers.1.moe.shared.wo"), nullptr);
  }
  for (const ParamInfo& p : layout.params()) {
    testing::ExpectGradientMatches(p.name, loss, params.data() + p.offset, p.size,
                                   grads.data() + p.offset, opt);
  }
}

TEST(DecoderGradient, WholeModelOpenMoeFfn) { CheckWholeModel(FFN_OPENMOE); }
TEST(DecoderGradient, WholeModelSwiGlu) { CheckWholeModel(FFN_SWIGLU); }
TEST(DecoderGradient, SharedExpertsOpenMoeFfn) { CheckWholeModel(FFN_OPENMOE, 2); }
TEST(DecoderGradient, SharedExpertsSwiGlu) { CheckWholeModel(FFN_SWIGLU, 1); }

TEST(Decoder, DenseLayersHaveNoRouting) {
  JobSpec spec = TinySpec(FFN_OPENMOE);
  const ModelDims dims = DimsFromSpec(spec);
  const ParamLayout layout(dims);
  std::vector<float> params(layout.total_size());
  InitParams(layout, 1, params.data());
  Decoder decoder(layout, RoutingFromSpec(spec, false));
  decoder.Forward(params.data(), TinyBatch(dims.vocab_size), {.lm_normalizer = 1.0 / 13});
  EXPECT_EQ(decoder.routing(0), nullptr);
  EXPECT_NE(decoder.routing(1), nullptr);
}

// A communicator that counts its calls and says it is rank `rank` of `size` (default one rank): a
// whole layout (model_parts 1) must not use it.
class CountingCommunicator final : public Communicator {
 public:
  explicit CountingCommunicator(int rank = 0, int size = 1) : rank_(rank), size_(size) {}
  int calls = 0;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void AllReduceSum(float*, int64_t) override { ++calls; }
  void AllReduceSum(double*, int64_t) override { ++calls; }
  void AllReduceSum(int64_t*, int64_t) override { ++calls; }
  void AllReduceMin(int64_t*, int64_t) override { ++calls; }
  void AllReduceMax(float*, int64_t) override { ++calls; }
  void AllToAll(const int64_t* send, int64_t* recv, int64_t n) override {
    ++calls;
    std::memcpy(recv, send, n * sizeof(int64_t));
  }
  void AllToAllV(const float*, const std::vector<int64_t>&, float*,
                 const std::vector<int64_t>&) override {
    OPENMOE_CHECK(false);
  }
  void AllToAllV(const uint16_t*, const std::vector<int64_t>&, uint16_t*,
                 const std::vector<int64_t>&) override {
    OPENMOE_CHECK(false);
  }
  void Broadcast(std::string*, int) override { ++calls; }
  std::unique_ptr<Communicator> Split(int, int) override { return nullptr; }
  int LocalSize() override { return 1; }

 private:
  int rank_, size_;
};

// The embedding rows the backward writes are those EmbeddingRowsWritten names: after a backward
// from a zero gradient, a row is nonzero exactly when it is named; a model piece (vocabulary rows
// split over the model axis) names its range's tokens as local rows.
TEST(Decoder, EmbeddingRowsWrittenAreTheNonzeroRowsOfItsGradient) {
  const JobSpec spec = TinySpec(FFN_OPENMOE);
  const ModelDims dims = DimsFromSpec(spec);
  Batch batch = TinyBatch(dims.vocab_size);
  batch.tokens[5] = batch.tokens[9];  // a repeated token
  const LossScales scales = {.lm_normalizer = 1.0 / 13, .output_z_weight = 0.02,
                             .load_balance_scale = 0.1, .router_z_scale = 0.01};
  const ParamLayout layout(dims);
  std::vector<float> params(layout.total_size()), grads(layout.total_size(), 0.0f);
  InitParams(layout, 2, params.data());
  Decoder decoder(layout, RoutingFromSpec(spec, false));
  decoder.Forward(params.data(), batch, scales, 4, grads.data());
  decoder.Backward(params.data(), batch, scales, grads.data());
  const SparseRows rows = decoder.EmbeddingGradRows();
  const ParamInfo& embedding = layout.Get("embedding");
  EXPECT_EQ(rows.begin, embedding.offset);
  EXPECT_EQ(rows.rows * rows.row_floats, embedding.size);
  EXPECT_EQ(rows.row_floats, dims.d_model);
  std::vector<bool> named(rows.rows, false);
  for (int64_t r : decoder.EmbeddingRowsWritten(batch)) named[r] = true;
  int64_t written = 0;
  for (int64_t r = 0; r < rows.rows; ++r) {
    bool nonzero = false;
    for (int64_t j = 0; j < rows.row_floats; ++j)
      nonzero = nonzero || grads[rows.begin + r * rows.row_floats + j] != 0.0f;
    EXPECT_EQ(nonzero, named[r]) << "row " << r;
    written += named[r] ? 1 : 0;
  }
  EXPECT_GT(written, 0);
  EXPECT_LT(written, rows.rows);  // 15 distinct tokens of 32 rows
  for (int index : {0, 1}) {  // pieces hold rows [16 index, + 16)
    const ParamLayout piece(dims, {.model_parts = 2, .model_index = index});
    CountingCommunicator comm(index, 2);
    const Decoder d(piece, RoutingFromSpec(spec, false), nullptr, &comm);
    EXPECT_EQ(d.EmbeddingGradRows().rows, 16);
    EXPECT_EQ(d.EmbeddingGradRows().begin, piece.Get("embedding").offset);
    std::vector<int64_t> want;
    for (int32_t t : batch.tokens)
      if (t / 16 == index) want.push_back(t - 16 * index);
    EXPECT_EQ(d.EmbeddingRowsWritten(batch), want) << "piece " << index;
    EXPECT_FALSE(want.empty());
  }
}

// model_parts 1 with a communicator is the path without one, bit for bit, and never communicates.
TEST(Decoder, WholeLayoutWithCommunicatorIsBitIdentical) {
  const JobSpec spec = TinySpec(FFN_OPENMOE);
  const ModelDims dims = DimsFromSpec(spec);
  const ParamLayout layout(dims, {.model_parts = 1, .model_index = 0});
  std::vector<float> params(layout.total_size());
  InitParams(layout, 2, params.data());
  const Batch batch = TinyBatch(dims.vocab_size);
  const LossScales scales = {.lm_normalizer = 1.0 / 13, .output_z_weight = 0.02,
                             .load_balance_scale = 0.1, .router_z_scale = 0.01};
  CountingCommunicator comm;
  std::vector<float> grads_alone(layout.total_size(), 0.0f), grads_comm(layout.total_size(), 0.0f);
  Decoder alone(layout, RoutingFromSpec(spec, false));
  Decoder with_comm(layout, RoutingFromSpec(spec, false), nullptr, &comm);
  const DecoderSums a = alone.Forward(params.data(), batch, scales, 4, grads_alone.data());
  alone.Backward(params.data(), batch, scales, grads_alone.data());
  const DecoderSums b = with_comm.Forward(params.data(), batch, scales, 4, grads_comm.data());
  with_comm.Backward(params.data(), batch, scales, grads_comm.data());
  EXPECT_EQ(comm.calls, 0);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.lm.cross_entropy, b.lm.cross_entropy);
  EXPECT_EQ(a.lm.z_loss, b.lm.z_loss);
  EXPECT_EQ(a.lm.correct, b.lm.correct);
  EXPECT_EQ(a.router[1].load_balance, b.router[1].load_balance);
  EXPECT_EQ(std::memcmp(grads_alone.data(), grads_comm.data(), grads_alone.size() * sizeof(float)),
            0);
}

}  // namespace
}  // namespace openmoe
