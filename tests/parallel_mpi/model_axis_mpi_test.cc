// Tensor parallelism on the model axis: a model group's piece decoders, each on its slice of the
// parameters and communicating over the group, give the losses and (their slices of) the
// gradients of the whole decoder run alone in one process, on the same batch.
//
// The world splits into model groups of `parts` ranks (np 2: one group of 2; np 4: one group of 4,
// and two groups of 2 on different batches). Every rank also runs the whole model itself, so the
// reference is independent of any communication.
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/decoder.h"
#include "model/sharding.h"
#include "parallel/communicator.h"
#include "parallel/expert_parallel.h"
#include "parallel/mesh.h"
#include "tests/testing/conditioned_params.h"

namespace openmoe {
namespace {

struct Case {
  std::string name;
  FfnForm form = FFN_OPENMOE;
  bool extra_dense_ffn = true;
  bool ignore_padding = false;
  double jitter = 0;
  bool bf16 = false;
  double tol = 1e-5;  // relative, on the loss sums and each gradient's L2 norm
};

// d 16, 4 heads, d_ff 16, experts' d_ff 8: every model-split dim splits into 4 pieces. Vocabulary
// 61 padded to 64: the padded columns sit in the last piece.
JobSpec SpecOf(const Case& c) {
  JobSpec spec;
  ModelConfig* m = spec.mutable_model();
  m->set_vocab_size(61);
  m->set_vocab_pad_multiple(16);
  m->set_num_layers(2);  // layer 0 dense, layer 1 MoE (plus the extra dense FFN when on)
  m->set_d_model(16);
  m->set_num_heads(4);
  m->set_head_dim(4);
  m->set_d_ff(16);
  m->set_expert_d_ff(8);
  m->set_num_experts(4);
  m->set_moe_interval(2);
  m->set_ffn_form(c.form);
  m->set_extra_dense_ffn(c.extra_dense_ffn);
  RouterConfig* r = spec.mutable_router();
  r->set_group_size(16);
  r->set_capacity_factor(0.75);  // C = max(2, round(0.75 * 16 * 2 / 4)) = 6 of 8 per expert
  r->set_min_capacity(2);
  r->set_ignore_padding_tokens(c.ignore_padding);
  r->set_aux_loss_weight(0.3);
  r->set_z_loss_weight(0.05);
  spec.mutable_loss()->set_output_z_loss_weight(0.02);
  if (c.bf16) spec.mutable_train()->set_compute_dtype(BF16);
  return spec;
}

// Two rows of 16: row 0 packs two segments and ends in padding (segment 0, no target weight);
// row 1 is one segment with a few unweighted positions. `seed` varies the tokens per group.
Batch BatchOf(int seed, int64_t vocab) {
  Batch b;
  b.Resize(2, 16);
  for (int64_t i = 0; i < 32; ++i) {
    b.tokens[i] = static_cast<int32_t>((i * 37 + 11 + 13 * seed) % vocab);
    b.targets[i] = static_cast<int32_t>((i * 23 + 5 + 7 * seed) % vocab);
    const int64_t pos = i % 16;
    b.segment_ids[i] = i < 16 ? (pos < 6 ? 1 : pos < 13 ? 2 : 0) : 1;
    b.loss_weights[i] = (b.segment_ids[i] == 0 || i % 7 == 3) ? 0.0f : 1.0f;
  }
  return b;
}

LossScales ScalesOf(const JobSpec& spec, const Batch& batch) {
  double weight = 0;
  for (float w : batch.loss_weights) weight += w;
  return {.lm_normalizer = 1.0 / weight,
          .output_z_weight = spec.loss().output_z_loss_weight(),
          .load_balance_scale = spec.router().aux_loss_weight() / 2.0,  // 1 MoE layer, 2 groups
          .router_z_scale = spec.router().z_loss_weight() / 32.0};
}

struct DecoderRun {
  DecoderSums sums;
  std::vector<float> grads;
  int64_t dropped = 0;  // dropped assignments over the MoE layers
};

DecoderRun RunDecoder(const ParamLayout& layout, const JobSpec& spec, const Case& c,
                      const Batch& batch, Communicator* model_comm,
                      ExpertRunner* runner = nullptr) {
  std::vector<float> params(layout.total_size());
  InitParams(layout, /*seed=*/5, params.data());
  // Elementwise, so the same on the whole and on a piece: routing margins far above rounding.
  testing::ConditionForRoutingTests(layout, 30.0f, &params);
  RoutingConfig routing = RoutingFromSpec(spec, false);
  routing.jitter_noise = c.jitter;
  routing.jitter_seed = 9;
  Decoder decoder(layout, routing, runner, model_comm);
  const LossScales scales = ScalesOf(spec, batch);
  DecoderRun run;
  run.grads.assign(layout.total_size(), 0.0f);
  run.sums = decoder.Forward(params.data(), batch, scales, 4, run.grads.data());
  decoder.Backward(params.data(), batch, scales, run.grads.data());
  for (int64_t l = 0; l < layout.dims().num_layers; ++l)
    if (const Routing* r = decoder.routing(l))
      for (int32_t s : r->choice_slot) run.dropped += s < 0;
  return run;
}

void ExpectNear(double piece, double whole, double tol, const std::string& what) {
  EXPECT_LE(std::abs(piece - whole), tol * std::max(std::abs(whole), 1e-30)) << what << ": piece "
      << piece << " whole " << whole;
}

void CheckGroups(const Case& c, int64_t parts) {
  auto world = MakeWorldCommunicator();
  ASSERT_EQ(world->size() % parts, 0);
  const int color = world->rank() / static_cast<int>(parts);
  std::unique_ptr<Communicator> group = world->Split(color, world->rank());
  ASSERT_EQ(group->size(), parts);
  const JobSpec spec = SpecOf(c);
  const ModelDims dims = DimsFromSpec(spec);
  ASSERT_EQ(dims.padded_vocab_size, 64);
  const ParamLayout whole(dims);
  const ParamLayout piece(dims, {.model_parts = parts, .model_index = group->rank()});
  const Batch batch = BatchOf(color, dims.vocab_size);

  const DecoderRun ref = RunDecoder(whole, spec, c, batch, nullptr);
  const DecoderRun got = RunDecoder(piece, spec, c, batch, group.get());
  const std::string where = c.name + " parts " + std::to_string(parts) + " rank " +
                            std::to_string(world->rank());
  EXPECT_GT(ref.dropped, 0) << where << ": the capacity should drop assignments";
  EXPECT_EQ(got.dropped, ref.dropped) << where;
  ExpectNear(got.sums.loss, ref.sums.loss, c.tol, where + " loss");
  ExpectNear(got.sums.lm.cross_entropy, ref.sums.lm.cross_entropy, c.tol, where + " cross_entropy");
  ExpectNear(got.sums.lm.z_loss, ref.sums.lm.z_loss, c.tol, where + " z_loss");
  EXPECT_EQ(got.sums.lm.weight, ref.sums.lm.weight) << where;
  EXPECT_EQ(got.sums.lm.correct, ref.sums.lm.correct) << where;
  ASSERT_EQ(got.sums.router.size(), ref.sums.router.size());
  for (size_t l = 0; l < ref.sums.router.size(); ++l) {
    ExpectNear(got.sums.router[l].load_balance, ref.sums.router[l].load_balance, c.tol,
               where + " load_balance");
    ExpectNear(got.sums.router[l].z_loss, ref.sums.router[l].z_loss, c.tol, where + " router z");
    EXPECT_EQ(got.sums.routing[l].kept_per_expert, ref.sums.routing[l].kept_per_expert) << where;
  }
  // Every gradient of the piece against the same box of the whole gradient.
  for (const ParamInfo& p : piece.params()) {
    const ParamInfo& w = whole.Get(p.name);
    std::vector<float> expected(p.size);
    CopyWholeToBox(p.box, ref.grads.data() + w.offset, expected.data());
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < p.size; ++i) {
      const double e = expected[i], a = got.grads[p.offset + i];
      diff += (a - e) * (a - e);
      norm += e * e;
    }
    EXPECT_GT(norm, 0.0) << where << " " << p.name << ": a zero gradient proves nothing";
    EXPECT_LE(std::sqrt(diff), c.tol * std::sqrt(norm)) << where << " " << p.name;
  }
}

void CheckEveryGroupSize(const Case& c) {
  auto world = MakeWorldCommunicator();
  for (int64_t parts : {2, 4})
    if (world->size() % parts == 0) CheckGroups(c, parts);
}

TEST(ModelAxisMpi, OpenMoeFfn) { CheckEveryGroupSize({.name = "openmoe"}); }
TEST(ModelAxisMpi, SwiGlu) { CheckEveryGroupSize({.name = "swiglu", .form = FFN_SWIGLU}); }
TEST(ModelAxisMpi, NoExtraDenseFfn) {
  CheckEveryGroupSize({.name = "no_extra_ffn", .extra_dense_ffn = false});
}
TEST(ModelAxisMpi, IgnorePaddingAndJitter) {
  CheckEveryGroupSize({.name = "ignore_padding_jitter", .ignore_padding = true, .jitter = 0.01});
}
// BF16 GEMMs on pieces: a piece rounds its own partial products, so only close to the whole.
TEST(ModelAxisMpi, Bf16) { CheckEveryGroupSize({.name = "bf16", .bf16 = true, .tol = 3e-2}); }

// Model and expert axes together (np 4: 4 chips, model_parallel 2, expert_parallel 2): two model
// groups on two data shards, and each model piece's ranks exchange expert rows over the expert
// axis. A rank's expert gradients are both shards' (its experts saw both), its shared gradients
// its own shard's (before any data-parallel reduction).
TEST(ModelAxisMpi, WithExpertParallelRunner) {
  auto world = MakeWorldCommunicator();
  if (world->size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const Case c{.name = "model_x_expert"};
  JobSpec spec = SpecOf(c);
  spec.mutable_topology()->set_num_chips(4);
  spec.mutable_mesh()->set_model_parallel(2);
  spec.mutable_mesh()->set_expert_parallel(2);
  const Mesh mesh = MakeMesh(spec, world->size(), world->rank()).value();
  ASSERT_EQ(mesh.model_ranks, 2);
  std::unique_ptr<Communicator> group = world->Split(mesh.ModelGroupColor(), world->rank());
  std::unique_ptr<Communicator> piece_world = world->Split(mesh.ModelPieceColor(), world->rank());
  const Mesh shards = mesh.ShardMesh();
  ExpertParallelRunner runner(shards, piece_world.get());
  const ModelDims dims = DimsFromSpec(spec);
  const ParamLayout whole(dims);
  const ParamLayout piece(dims, {.first_expert = shards.first_local_expert,
                                 .num_local_experts = shards.num_local_experts,
                                 .model_parts = 2,
                                 .model_index = mesh.model_index});
  ASSERT_EQ(piece.num_local_experts(), 2);
  const int shard = mesh.ModelGroupColor();
  const DecoderRun ref[2] = {RunDecoder(whole, spec, c, BatchOf(0, dims.vocab_size), nullptr),
                      RunDecoder(whole, spec, c, BatchOf(1, dims.vocab_size), nullptr)};
  const DecoderRun got =
      RunDecoder(piece, spec, c, BatchOf(shard, dims.vocab_size), group.get(), &runner);
  const std::string where = "rank " + std::to_string(world->rank());
  EXPECT_GT(ref[shard].dropped, 0);
  ExpectNear(got.sums.loss, ref[shard].sums.loss, c.tol, where + " loss");
  EXPECT_EQ(got.sums.lm.correct, ref[shard].sums.lm.correct) << where;
  for (const ParamInfo& p : piece.params()) {
    const ParamInfo& w = whole.Get(p.name);
    std::vector<float> expected(p.size), sum(w.size);
    for (int64_t i = 0; i < w.size; ++i) {
      sum[i] = p.is_expert ? ref[0].grads[w.offset + i] + ref[1].grads[w.offset + i]
                           : ref[shard].grads[w.offset + i];
    }
    CopyWholeToBox(p.box, sum.data(), expected.data());
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < p.size; ++i) {
      const double e = expected[i], a = got.grads[p.offset + i];
      diff += (a - e) * (a - e);
      norm += e * e;
    }
    EXPECT_GT(norm, 0.0) << where << " " << p.name;
    EXPECT_LE(std::sqrt(diff), c.tol * std::sqrt(norm)) << where << " " << p.name;
  }
}

}  // namespace
}  // namespace openmoe
