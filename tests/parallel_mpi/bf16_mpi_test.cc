// BF16 across ranks: the expert exchange carries bf16 rows (half the bytes of FP32) and gives
// what one process computes; a whole BF16 job on 64 chips over the ranks matches one chip.
#include <algorithm>
#include <vector>

#include "gtest/gtest.h"
#include "model/expert_ffn.h"
#include "model/moe.h"
#include "parallel/expert_parallel.h"
#include "tests/testing/grad_check.h"
#include "tests/testing/layout_check.h"

namespace openmoe {
namespace {

// d_model odd on purpose: a bf16 row is then padded to whole 32-bit words on the wire.
constexpr int64_t kD = 7, kF = 5;

int64_t TokensOfRank(int r) { return 4 + 2 * r; }  // split over the rank's 2 chips

// Two chips per rank, one expert per chip, one expert group over the world; every token of every
// rank goes to the last expert (the last rank's), so all but the last rank's rows cross ranks.
TEST(Bf16ExchangeMpi, BfloatRowsOnTheWireGiveTheOneProcessResult) {
  auto world = MakeWorldCommunicator();
  const int n = world->size(), rank = world->rank();
  JobSpec spec;
  spec.mutable_topology()->set_num_chips(2 * n);
  spec.mutable_mesh()->set_expert_parallel(2 * n);
  spec.mutable_model()->set_num_experts(2 * n);
  const Mesh mesh = MakeMesh(spec, n, rank).value();
  const int64_t experts = 2 * n, target = experts - 1, tokens = TokensOfRank(rank);

  std::vector<float> wi0(experts * kD * 2 * kF), wi1(experts * kD * kF), wo(experts * kF * kD);
  testing::FillNormal(wi0.data(), wi0.size(), 0.4, 1);
  testing::FillNormal(wi1.data(), wi1.size(), 0.4, 2);
  testing::FillNormal(wo.data(), wo.size(), 0.4, 3);
  auto weights = [&](int64_t first) {
    return MoeWeights{nullptr, wi0.data() + first * kD * 2 * kF, wi1.data() + first * kD * kF,
                      wo.data() + first * kF * kD};
  };
  std::vector<float> x(tokens * kD), dy(tokens * kD);
  testing::FillNormal(x.data(), x.size(), 1.0, 100 + rank);
  testing::FillNormal(dy.data(), dy.size(), 1.0, 200 + rank);

  // Forward and backward through the runner at `precision`; returns its counters.
  auto exchange = [&](GemmPrecision precision, std::vector<float>* y, std::vector<float>* dx) {
    const MoeDims dims{tokens, kD, kF, FFN_OPENMOE, experts, precision};
    MoeCache cache;
    Routing& r = cache.routing;
    r.num_tokens = tokens;
    r.num_experts = experts;
    r.top_k = 1;
    r.expert_offsets.assign(experts + 1, 0);
    r.expert_offsets[experts] = tokens;
    r.kept_token.resize(tokens);
    for (int64_t t = 0; t < tokens; ++t) r.kept_token[t] = t;
    r.kept_choice.assign(tokens, 0);
    r.kept_gate.assign(tokens, 1.0f);
    cache.dispatched.ResizeUninitialized({tokens, kD});
    std::copy(x.begin(), x.end(), cache.dispatched.data());
    cache.expert_out.ResizeUninitialized({tokens, kD});
    ExpertParallelRunner runner(mesh, world.get());
    const MoeWeights local = weights(mesh.first_local_expert);
    runner.Forward(/*layer=*/0, dims, local, &cache);
    y->assign(cache.expert_out.data(), cache.expert_out.data() + tokens * kD);
    std::vector<float> g0(2 * kD * 2 * kF), g1(2 * kD * kF), go(2 * kF * kD);
    dx->assign(tokens * kD, 0.0f);
    runner.Backward(0, dims, local, {nullptr, g0.data(), g1.data(), go.data()}, &cache, dy.data(),
                    dx->data());
    return runner.counters();
  };
  std::vector<float> y16, dx16, y32, dx32;
  const ExchangeCounters c16 = exchange(GemmPrecision::kBf16, &y16, &dx16);
  const ExchangeCounters c32 = exchange(GemmPrecision::kFp32, &y32, &dx32);
  EXPECT_EQ(c16.rows_remote, c32.rows_remote);
  EXPECT_EQ(c16.bytes_remote, c16.rows_remote * kD * 2);
  EXPECT_EQ(2 * c16.bytes_remote, c32.bytes_remote);
  if (rank != n - 1) {
    EXPECT_GT(c16.rows_remote, 0);
  }

  // One process: the target expert's block of this rank's rows, in BF16.
  const MoeDims one{tokens, kD, kF, FFN_OPENMOE, experts, GemmPrecision::kBf16};
  const std::vector<ExpertBlock> block = {{.begin = 0, .rows = tokens, .local_expert = target}};
  std::vector<FfnCache> caches;
  std::vector<float> want_y(tokens * kD), want_dx(tokens * kD, 0.0f);
  std::vector<float> g0(wi0.size()), g1(wi1.size()), go(wo.size());
  ExpertBlocksForward(one, weights(0), block, x.data(), &caches, want_y.data());
  ExpertBlocksBackward(one, weights(0), {nullptr, g0.data(), g1.data(), go.data()}, block,
                       x.data(), caches, dy.data(), want_dx.data());
  double bf16_vs_fp32 = 0;
  for (int64_t i = 0; i < tokens * kD; ++i) {
    EXPECT_NEAR(y16[i], want_y[i], 1e-6 * std::fabs(want_y[i]) + 1e-7) << "rank " << rank << " " << i;
    EXPECT_NEAR(dx16[i], want_dx[i], 1e-6 * std::fabs(want_dx[i]) + 1e-7) << "rank " << rank;
    bf16_vs_fp32 = std::max(bf16_vs_fp32, static_cast<double>(std::fabs(y16[i] - y32[i])));
  }
  EXPECT_GT(bf16_vs_fp32, 0.0) << "the BF16 exchange computed in fp32";
}

// A BF16 job on 64 chips hosted by the world's ranks against the same job on one chip: bf16
// rounding turns fp32 summation-order differences into occasional one-ulp (2^-8) flips of single
// elements, so the match is to 1e-3 relative rather than FP32's 1e-5.
TEST(Bf16LayoutMpi, SixtyFourChipsMatchOneChip) {
  auto world = MakeWorldCommunicator();
  JobSpec spec = testing::LayoutJob(16);
  spec.mutable_train()->set_compute_dtype(BF16);
  testing::ExpectSameAsOneChip(testing::OnMesh(spec, 64, 8, 8), world.get(), /*steps=*/3,
                               /*tolerance=*/1e-3);
}

// Shared experts in BF16 across the ranks, on the expert and model axes (a model group of 2).
TEST(Bf16LayoutMpi, SharedExpertsMatchOneChip) {
  auto world = MakeWorldCommunicator();
  JobSpec spec = testing::WithSharedExperts(testing::LayoutJob(8), 2, 16);
  spec.mutable_train()->set_compute_dtype(BF16);
  testing::ExpectSameAsOneChip(
      testing::WithModelParallel(testing::OnMesh(spec, 8, 4, 2, /*microbatches=*/2), 2),
      world.get(), /*steps=*/3, /*tolerance=*/1e-3);
}

}  // namespace
}  // namespace openmoe
