// Deduplicated dispatch: a token whose kept experts share a rank travels there once. On a forced
// top-2 routing where most tokens' two experts sit on one rank, the exchange counters equal what
// a naive loop over every rank's assignments says travels (token rows out, outputs back per
// assignment, d outputs out per assignment, d inputs back per token row in FP32 and per
// assignment in BF16), fewer bytes than one row per assignment; and the outputs and input
// gradients equal one process running every expert, unchunked and chunked. A trainer that
// re-runs each layer's forward in its backward (REMAT_FULL) rebuilds the same token rows.
#include <cmath>
#include <set>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "model/moe.h"
#include "parallel/comm_thread.h"
#include "parallel/expert_parallel.h"
#include "tests/testing/grad_check.h"
#include "tests/testing/layout_check.h"

namespace openmoe {
namespace {

constexpr int64_t kD = 12, kF = 3;  // d large enough that the map (4 bytes per assignment) costs
                                    // less than the rows it saves

int64_t TokensOfRank(int r) { return 6 + 2 * r; }  // split over the rank's 2 chips

// Token t of rank r keeps experts 2q + 1 and 2q, q = (t + r) % ranks (one rank), except every
// third token, whose second expert lies on the next rank; every fifth keeps only its first.
std::vector<int64_t> KeptExperts(int r, int64_t t, int ranks) {
  const int64_t q = (t + r) % ranks;
  std::vector<int64_t> kept = {2 * q + 1, t % 3 == 2 ? 2 * ((q + 1) % ranks) : 2 * q};
  if (t % 5 == 4) kept.pop_back();
  return kept;
}

// Rank r's routing: kept assignments grouped by expert, by token within an expert.
void ForcedRouting(int r, int ranks, MoeCache* cache) {
  const int64_t tokens = TokensOfRank(r), experts = 2 * ranks;
  Routing& routing = cache->routing;
  routing.num_tokens = tokens;
  routing.num_experts = experts;
  routing.top_k = 2;
  routing.expert_offsets.assign(experts + 1, 0);
  for (int64_t e = 0; e < experts; ++e) {
    for (int64_t t = 0; t < tokens; ++t) {
      const std::vector<int64_t> kept = KeptExperts(r, t, ranks);
      for (size_t j = 0; j < kept.size(); ++j) {
        if (kept[j] != e) continue;
        routing.kept_token.push_back(t);
        routing.kept_choice.push_back(static_cast<int32_t>(j));
        routing.kept_gate.push_back(1.0f);
      }
    }
    routing.expert_offsets[e + 1] = routing.NumKept();
  }
}

struct Result {
  std::vector<float> y, dx_per_token;
};

// Forward and backward of rank `rank`'s tokens through `runner` (full: every expert, one process).
Result RunLayer(ExpertRunner* runner, const MoeDims& dims, const MoeWeights& w, int rank, int ranks,
                GemmPrecision precision) {
  MoeDims dims_p = dims;
  dims_p.precision = precision;
  MoeCache cache;
  ForcedRouting(rank, ranks, &cache);
  const Routing& r = cache.routing;
  const int64_t kept = r.NumKept();
  std::vector<float> x(dims.tokens * kD), dy(kept * kD);
  testing::FillNormal(x.data(), x.size(), 1.0, 100 + rank);
  testing::FillNormal(dy.data(), dy.size(), 1.0, 200 + rank);
  cache.dispatched.ResizeUninitialized({kept, kD});
  for (int64_t a = 0; a < kept; ++a)
    std::copy_n(x.data() + r.kept_token[a] * kD, kD, cache.dispatched.data() + a * kD);
  cache.expert_out.ResizeUninitialized({kept, kD});
  runner->Forward(/*layer=*/0, dims_p, w, &cache);
  std::vector<float> g0(dims.num_experts * kD * 2 * kF), g1(dims.num_experts * kD * kF);
  std::vector<float> go(dims.num_experts * kF * kD), d_dispatched(kept * kD, 0.0f);
  runner->Backward(0, dims_p, w, {nullptr, g0.data(), g1.data(), go.data()}, &cache, dy.data(),
                   d_dispatched.data());
  Result out;
  out.y.assign(cache.expert_out.data(), cache.expert_out.data() + kept * kD);
  // What the MoE layer's dx gets: the sum of a token's rows.
  out.dx_per_token.assign(dims.tokens * kD, 0.0f);
  for (int64_t a = 0; a < kept; ++a)
    for (int64_t i = 0; i < kD; ++i)
      out.dx_per_token[r.kept_token[a] * kD + i] += d_dispatched[a * kD + i];
  return out;
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double tolerance,
                 const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tolerance * (1 + std::fabs(want[i]))) << what << " " << i;
}

TEST(DedupDispatchMpi, TokenRowsTravelOncePerRankAndCountersSayIt) {
  auto world = MakeWorldCommunicator();
  const int n = world->size(), me = world->rank();
  if (n < 2) GTEST_SKIP() << "needs two ranks";
  JobSpec spec;
  spec.mutable_topology()->set_num_chips(2 * n);
  spec.mutable_mesh()->set_expert_parallel(2 * n);
  spec.mutable_model()->set_num_experts(2 * n);
  const Mesh mesh = MakeMesh(spec, n, me).value();
  const int64_t experts = 2 * n;
  auto rank_of_expert = [&](int64_t e) {
    return mesh.RankOfChip(mesh.ChipHoldingExpert(mesh.FirstChip(), e));
  };

  // Naive count of what leaves this rank, per exchange, from every rank's routing.
  int64_t token_rows[2] = {0, 0}, own_assignments[2] = {0, 0};  // [to this rank, to others]
  int64_t served_assignments[2] = {0, 0}, served_token_rows[2] = {0, 0};
  for (int r = 0; r < n; ++r) {
    for (int64_t t = 0; t < TokensOfRank(r); ++t) {
      std::set<int> ranks_of_token;
      for (int64_t e : KeptExperts(r, t, n)) {
        const int q = rank_of_expert(e);
        ranks_of_token.insert(q);
        if (r == me) ++own_assignments[q != me];
        if (q == me) ++served_assignments[r != me];
      }
      for (int q : ranks_of_token) {
        if (r == me) ++token_rows[q != me];
        if (q == me) ++served_token_rows[r != me];
      }
    }
  }
  ASSERT_LT(token_rows[1], own_assignments[1]) << "the routing shares no remote rank";

  std::vector<float> wi0(experts * kD * 2 * kF), wi1(experts * kD * kF), wo(experts * kF * kD);
  testing::FillNormal(wi0.data(), wi0.size(), 0.4, 1);
  testing::FillNormal(wi1.data(), wi1.size(), 0.4, 2);
  testing::FillNormal(wo.data(), wo.size(), 0.4, 3);
  const int64_t first = mesh.first_local_expert;
  const MoeWeights local{nullptr, wi0.data() + first * kD * 2 * kF, wi1.data() + first * kD * kF,
                         wo.data() + first * kF * kD};
  const MoeWeights full{nullptr, wi0.data(), wi1.data(), wo.data()};
  const MoeDims dims{TokensOfRank(me), kD, kF, FFN_OPENMOE, experts};

  CommThread thread(world->ThreadSafe());
  for (GemmPrecision precision : {GemmPrecision::kFp32, GemmPrecision::kBf16}) {
    const bool bf16 = precision == GemmPrecision::kBf16;
    LocalExpertRunner one_process;
    const Result want = RunLayer(&one_process, dims, full, me, n, precision);
    ExpertParallelRunner whole(mesh, world.get());
    const Result got = RunLayer(&whole, dims, local, me, n, precision);
    const double tolerance = bf16 ? 1e-3 : 1e-5;
    ExpectClose(got.y, want.y, tolerance, "expert outputs");
    ExpectClose(got.dx_per_token, want.dx_per_token, tolerance, "input gradients");

    // Dispatch: token rows; combine and d outputs: assignments; d inputs back: token rows
    // (FP32, summed) or assignments (BF16). Rows for this rank skip the wire: copied once per
    // assignment.
    const ExchangeCounters& c = whole.counters();
    const int64_t remote_back = bf16 ? served_assignments[1] : served_token_rows[1];
    EXPECT_EQ(c.rows_remote,
              token_rows[1] + served_assignments[1] + own_assignments[1] + remote_back);
    EXPECT_EQ(c.rows_local, 4 * own_assignments[0]);
    EXPECT_EQ(own_assignments[0], served_assignments[0]);
    const int64_t element = bf16 ? 2 : 4;
    EXPECT_EQ(c.bytes_remote, c.rows_remote * kD * element);
    EXPECT_EQ(c.index_bytes_remote, own_assignments[1] * 4);
    EXPECT_EQ(c.exchanges, 4);
    const int64_t per_assignment = 2 * (own_assignments[1] + served_assignments[1]) * kD * element;
    EXPECT_LT(c.bytes_remote, per_assignment);
    EXPECT_LT(c.bytes_remote + c.index_bytes_remote, per_assignment);

    // Chunked: the same token rows travel (the chunks cut them, not the assignments).
    for (int64_t chunks : {2, 3, 7}) {
      ExpertParallelRunner chunked(mesh, world.get(), chunks, &thread);
      const Result piecewise = RunLayer(&chunked, dims, local, me, n, precision);
      ExpectClose(piecewise.y, want.y, tolerance, "chunked expert outputs");
      ExpectClose(piecewise.dx_per_token, want.dx_per_token, tolerance, "chunked input gradients");
      EXPECT_EQ(chunked.counters().rows_remote, c.rows_remote) << chunks << " chunks";
      EXPECT_EQ(chunked.counters().rows_local, c.rows_local) << chunks << " chunks";
      EXPECT_EQ(chunked.counters().bytes_remote, c.bytes_remote) << chunks << " chunks";
    }
  }
}

// REMAT_FULL re-runs each MoE layer's forward (its exchange plan included) inside the backward:
// with top-2 routing on an expert group spanning the ranks, microbatches and chunked exchanges,
// the losses and gradients stay the one-chip ones.
TEST(DedupDispatchMpi, FullRematMatchesOneChip) {
  auto world = MakeWorldCommunicator();
  for (int64_t chunks : {1, 3}) {
    JobSpec spec = testing::OnMesh(testing::LayoutJob(8), 8, 4, 8, /*microbatches=*/2);
    spec.mutable_train()->set_remat(REMAT_FULL);
    spec.mutable_train()->set_expert_exchange_chunks(chunks);
    testing::ExpectSameAsOneChip(spec, world.get());
  }
}

}  // namespace
}  // namespace openmoe
