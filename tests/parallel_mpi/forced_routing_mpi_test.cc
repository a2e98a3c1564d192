// Forced routing through the expert-parallel runner: every token of every rank goes to one expert
// that lives on the last rank only, and rank 0 has no tokens at all. Outputs, input gradients and
// that expert's weight gradient must equal a one-process computation, and nothing may hang.
#include <vector>

#include "gtest/gtest.h"
#include "model/moe.h"
#include "parallel/expert_parallel.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

constexpr int64_t kD = 8, kF = 6;

int64_t TokensOfRank(int r) { return r == 0 ? 0 : 4 * r; }  // rank 0 sends nothing

// All experts' weights (E, ...) the same on every rank.
struct AllExperts {
  std::vector<float> wi_0, wi_1, wo;
  explicit AllExperts(int64_t experts)
      : wi_0(experts * kD * 2 * kF), wi_1(experts * kD * kF), wo(experts * kF * kD) {
    testing::FillNormal(wi_0.data(), wi_0.size(), 0.4, 1);
    testing::FillNormal(wi_1.data(), wi_1.size(), 0.4, 2);
    testing::FillNormal(wo.data(), wo.size(), 0.4, 3);
  }
  MoeWeights Slice(int64_t first) const {
    return {nullptr, wi_0.data() + first * kD * 2 * kF, wi_1.data() + first * kD * kF,
            wo.data() + first * kF * kD};
  }
};

// A routing of `tokens` tokens with every token's single kept choice on `expert`.
void AllToOneExpert(int64_t tokens, int64_t experts, int64_t expert, MoeCache* cache) {
  Routing& r = cache->routing;
  r.num_tokens = tokens;
  r.num_experts = experts;
  r.top_k = 1;
  r.expert_offsets.assign(experts + 1, 0);
  for (int64_t e = expert + 1; e <= experts; ++e) r.expert_offsets[e] = tokens;
  r.kept_token.resize(tokens);
  for (int64_t t = 0; t < tokens; ++t) r.kept_token[t] = t;
  r.kept_choice.assign(tokens, 0);
  r.kept_gate.assign(tokens, 1.0f);
}

// Two chips per rank, one expert per chip, one expert group spanning every chip of the world.
JobSpec OneGroupSpec(int ranks) {
  JobSpec spec;
  spec.mutable_topology()->set_num_chips(2 * ranks);
  spec.mutable_mesh()->set_expert_parallel(2 * ranks);
  spec.mutable_model()->set_num_experts(2 * ranks);
  return spec;
}

TEST(ForcedRoutingMpi, EveryTokenToOneRemoteExpert) {
  auto world = MakeWorldCommunicator();
  const int n = world->size(), rank = world->rank();
  const JobSpec spec = OneGroupSpec(n);
  const Mesh mesh = MakeMesh(spec, n, rank).value();
  const int64_t experts = 2 * n, target = experts - 1;  // held by the last rank alone
  ASSERT_EQ(mesh.num_local_experts, 2);
  const MoeDims dims{TokensOfRank(rank), kD, kF, FFN_OPENMOE, experts};
  const AllExperts all(experts);

  // Every rank's inputs and output gradients, reproducible anywhere.
  auto inputs = [](int r, std::vector<float>* x, std::vector<float>* dy) {
    x->resize(TokensOfRank(r) * kD);
    dy->resize(TokensOfRank(r) * kD);
    testing::FillNormal(x->data(), x->size(), 1.0, 100 + r);
    testing::FillNormal(dy->data(), dy->size(), 1.0, 200 + r);
  };
  std::vector<float> x, dy;
  inputs(rank, &x, &dy);

  ExpertParallelRunner runner(mesh, world.get());
  MoeCache cache;
  AllToOneExpert(dims.tokens, experts, target, &cache);
  cache.dispatched.ResizeUninitialized({dims.tokens, kD});
  std::copy(x.begin(), x.end(), cache.dispatched.data());
  cache.expert_out.ResizeUninitialized({dims.tokens, kD});
  const MoeWeights local = all.Slice(mesh.first_local_expert);
  runner.Forward(/*layer=*/0, dims, local, &cache);
  // Dispatch sends this rank's tokens; combine sends back what this rank's experts received.
  int64_t all_tokens = 0;
  for (int r = 0; r < n; ++r) all_tokens += TokensOfRank(r);
  const bool holder = rank == n - 1;
  const ExchangeCounters& c = runner.counters();
  EXPECT_EQ(c.exchanges, 2);
  EXPECT_EQ(c.rows_local + c.rows_remote, dims.tokens + (holder ? all_tokens : 0));
  EXPECT_EQ(c.rows_local, holder ? 2 * dims.tokens : 0);
  std::vector<float> g0(2 * kD * 2 * kF, 0), g1(2 * kD * kF, 0), go(2 * kF * kD, 0);
  std::vector<float> dx(dims.tokens * kD, 0.0f);
  runner.Backward(/*layer=*/0, dims, local, {nullptr, g0.data(), g1.data(), go.data()}, &cache, dy.data(), dx.data());

  // One process: the target expert on this rank's tokens.
  const FfnDims f{dims.tokens, kD, kF, FFN_OPENMOE};
  const MoeWeights full = all.Slice(0);
  FfnCache ref_cache;
  std::vector<float> want_y(dims.tokens * kD), want_dx(dims.tokens * kD, 0.0f);
  std::vector<float> r0(kD * 2 * kF, 0), r1(kD * kF, 0), ro(kF * kD, 0);
  FfnForward(f, ExpertFfnWeights(dims, full, target), x.data(), &ref_cache, want_y.data());
  FfnBackward(f, ExpertFfnWeights(dims, full, target), x.data(), &ref_cache, dy.data(),
              {r0.data(), r1.data(), ro.data()}, want_dx.data());
  for (int64_t i = 0; i < dims.tokens * kD; ++i) {
    EXPECT_NEAR(cache.expert_out[i], want_y[i], 1e-5) << "rank " << rank;
    EXPECT_NEAR(dx[i], want_dx[i], 1e-5) << "rank " << rank;
  }

  // The holder's weight gradient sums every rank's tokens; every other expert's stays zero.
  std::vector<float> sum_wo(kF * kD, 0.0f);
  for (int r = 0; r < n; ++r) {
    std::vector<float> xr, dyr, tmp(TokensOfRank(r) * kD, 0), a(kD * 2 * kF, 0), b(kD * kF, 0);
    inputs(r, &xr, &dyr);
    FfnCache c;
    const FfnDims fr{TokensOfRank(r), kD, kF, FFN_OPENMOE};
    std::vector<float> y(TokensOfRank(r) * kD);
    FfnForward(fr, ExpertFfnWeights(dims, full, target), xr.data(), &c, y.data());
    FfnBackward(fr, ExpertFfnWeights(dims, full, target), xr.data(), &c, dyr.data(),
                {a.data(), b.data(), sum_wo.data()}, tmp.data());
  }
  for (int64_t le = 0; le < 2; ++le) {
    const bool is_target = holder && mesh.first_local_expert + le == target;
    for (int64_t i = 0; i < kF * kD; ++i) {
      EXPECT_NEAR(go[le * kF * kD + i], is_target ? sum_wo[i] : 0.0f, 1e-4)
          << "rank " << rank << " local expert " << le;
    }
  }
  EXPECT_EQ(c.exchanges, 4);  // and the backward mirrors both
}

// Two MoE layers through one runner, forward both and then backward in reverse (as the decoder
// does): each layer's exchange is kept apart, keyed by its layer index, so each layer's outputs
// and input gradients equal a one-process run of its expert.
TEST(ForcedRoutingMpi, LayersKeepTheirOwnExchange) {
  auto world = MakeWorldCommunicator();
  const int n = world->size(), rank = world->rank();
  const JobSpec spec = OneGroupSpec(n);
  const Mesh mesh = MakeMesh(spec, n, rank).value();
  const int64_t experts = 2 * n;
  const MoeDims dims{TokensOfRank(rank), kD, kF, FFN_OPENMOE, experts};
  const AllExperts all(experts);
  const MoeWeights local = all.Slice(mesh.first_local_expert);
  const MoeWeights full = all.Slice(0);
  int64_t all_tokens = 0;
  for (int r = 0; r < n; ++r) all_tokens += TokensOfRank(r);

  // Layer 1 sends everything to the last expert (last rank), layer 5 to expert 0 (rank 0).
  const std::vector<int64_t> layers = {1, 5}, targets = {experts - 1, 0};
  ExpertParallelRunner runner(mesh, world.get());
  std::vector<MoeCache> caches(2);
  std::vector<std::vector<float>> xs(2), dys(2);
  for (int i = 0; i < 2; ++i) {
    xs[i].resize(dims.tokens * kD);
    dys[i].resize(dims.tokens * kD);
    testing::FillNormal(xs[i].data(), xs[i].size(), 1.0, 300 + 10 * i + rank);
    testing::FillNormal(dys[i].data(), dys[i].size(), 1.0, 400 + 10 * i + rank);
    AllToOneExpert(dims.tokens, experts, targets[i], &caches[i]);
    caches[i].dispatched.ResizeUninitialized({dims.tokens, kD});
    std::copy(xs[i].begin(), xs[i].end(), caches[i].dispatched.data());
    caches[i].expert_out.ResizeUninitialized({dims.tokens, kD});
  }
  for (int i = 0; i < 2; ++i) runner.Forward(layers[i], dims, local, &caches[i]);
  // Each layer's receiver got every rank's rows for its expert; the other ranks got none.
  EXPECT_EQ(runner.exchange_state(1)->recv.dim(0), rank == n - 1 ? all_tokens : 0);
  EXPECT_EQ(runner.exchange_state(5)->recv.dim(0), rank == 0 ? all_tokens : 0);
  EXPECT_EQ(runner.exchange_state(7), nullptr);

  std::vector<float> g0(2 * kD * 2 * kF, 0), g1(2 * kD * kF, 0), go(2 * kF * kD, 0);
  std::vector<std::vector<float>> dxs(2, std::vector<float>(dims.tokens * kD, 0.0f));
  for (int i = 1; i >= 0; --i) {
    runner.Backward(layers[i], dims, local, {nullptr, g0.data(), g1.data(), go.data()},
                    &caches[i], dys[i].data(), dxs[i].data());
  }
  for (int i = 0; i < 2; ++i) {
    const FfnDims f{dims.tokens, kD, kF, FFN_OPENMOE};
    FfnCache ref;
    std::vector<float> want_y(dims.tokens * kD), want_dx(dims.tokens * kD, 0.0f);
    std::vector<float> r0(kD * 2 * kF, 0), r1(kD * kF, 0), ro(kF * kD, 0);
    FfnForward(f, ExpertFfnWeights(dims, full, targets[i]), xs[i].data(), &ref, want_y.data());
    FfnBackward(f, ExpertFfnWeights(dims, full, targets[i]), xs[i].data(), &ref, dys[i].data(),
                {r0.data(), r1.data(), ro.data()}, want_dx.data());
    for (int64_t j = 0; j < dims.tokens * kD; ++j) {
      EXPECT_NEAR(caches[i].expert_out[j], want_y[j], 1e-5) << "rank " << rank << " layer " << i;
      EXPECT_NEAR(dxs[i][j], want_dx[j], 1e-5) << "rank " << rank << " layer " << i;
    }
  }
}

}  // namespace
}  // namespace openmoe
