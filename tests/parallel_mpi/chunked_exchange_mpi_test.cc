// The expert exchange in chunks (train.expert_exchange_chunks) against the one-shot exchange:
// the same expert outputs and input gradients (every row meets the same expert arithmetic), the
// same weight gradients to fp32 summation order, the same rows counted, with runs shorter than
// the chunk count (empty chunks) and experts that get nothing; and in the trainer, the same losses.
#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "model/moe.h"
#include "parallel/expert_parallel.h"
#include "tests/testing/grad_check.h"
#include "tests/testing/layout_check.h"

namespace openmoe {
namespace {

constexpr int64_t kD = 6, kF = 4;

struct RunnerResult {
  std::vector<float> y, dx, g0, g1, go;
  ExchangeCounters counters;
};

// Two chips per rank, one expert per chip, one expert group over the world. Token t of rank r
// goes to expert (3t + r) % (experts - 1): the last expert gets nothing, the others runs of
// different lengths (some shorter than the chunk count).
RunnerResult RunExperts(Communicator* world, int64_t chunks, CommThread* thread,
                        GemmPrecision precision) {
  const int n = world->size(), rank = world->rank();
  JobSpec spec;
  spec.mutable_topology()->set_num_chips(2 * n);
  spec.mutable_mesh()->set_expert_parallel(2 * n);
  spec.mutable_model()->set_num_experts(2 * n);
  const Mesh mesh = MakeMesh(spec, n, rank).value();
  const int64_t experts = 2 * n, tokens = 10 + 4 * rank;
  std::vector<float> wi0(experts * kD * 2 * kF), wi1(experts * kD * kF), wo(experts * kF * kD);
  testing::FillNormal(wi0.data(), wi0.size(), 0.4, 1);
  testing::FillNormal(wi1.data(), wi1.size(), 0.4, 2);
  testing::FillNormal(wo.data(), wo.size(), 0.4, 3);
  const int64_t first = mesh.first_local_expert;
  const MoeWeights local{nullptr, wi0.data() + first * kD * 2 * kF, wi1.data() + first * kD * kF,
                         wo.data() + first * kF * kD};
  std::vector<float> x(tokens * kD), dy(tokens * kD);
  testing::FillNormal(x.data(), x.size(), 1.0, 100 + rank);
  testing::FillNormal(dy.data(), dy.size(), 1.0, 200 + rank);

  const MoeDims dims{tokens, kD, kF, FFN_OPENMOE, experts, precision};
  MoeCache cache;
  Routing& r = cache.routing;
  r.num_tokens = tokens;
  r.num_experts = experts;
  r.top_k = 1;
  std::vector<int64_t> expert_of(tokens);
  for (int64_t t = 0; t < tokens; ++t) expert_of[t] = (3 * t + rank) % (experts - 1);
  r.expert_offsets.assign(experts + 1, 0);
  for (int64_t e = 0; e < experts; ++e) {
    r.expert_offsets[e + 1] = r.expert_offsets[e];
    for (int64_t t = 0; t < tokens; ++t) {
      if (expert_of[t] != e) continue;
      r.kept_token.push_back(t);
      ++r.expert_offsets[e + 1];
    }
  }
  r.kept_choice.assign(tokens, 0);
  r.kept_gate.assign(tokens, 1.0f);
  cache.dispatched.ResizeUninitialized({tokens, kD});
  for (int64_t a = 0; a < tokens; ++a)
    std::copy_n(x.data() + r.kept_token[a] * kD, kD, cache.dispatched.data() + a * kD);
  cache.expert_out.ResizeUninitialized({tokens, kD});

  ExpertParallelRunner runner(mesh, world, chunks, thread);
  runner.Forward(/*layer=*/0, dims, local, &cache);
  RunnerResult out;
  out.y.assign(cache.expert_out.data(), cache.expert_out.data() + tokens * kD);
  out.g0.assign(2 * kD * 2 * kF, 0.0f);
  out.g1.assign(2 * kD * kF, 0.0f);
  out.go.assign(2 * kF * kD, 0.0f);
  out.dx.assign(tokens * kD, 0.0f);
  runner.Backward(0, dims, local, {nullptr, out.g0.data(), out.g1.data(), out.go.data()}, &cache,
                  dy.data(), out.dx.data());
  out.counters = runner.counters();
  return out;
}

void ExpectClose(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_NEAR(a[i], b[i], 1e-5f * (1 + std::fabs(b[i]))) << what << " element " << i;
}

TEST(ChunkedExchangeMpi, ChunksGiveTheOneShotExchange) {
  auto world = MakeWorldCommunicator();
  CommThread thread(world->ThreadSafe());
  for (GemmPrecision precision : {GemmPrecision::kFp32, GemmPrecision::kBf16}) {
    const RunnerResult whole = RunExperts(world.get(), 1, &thread, precision);
    for (int64_t chunks : {2, 3, 7}) {
      const RunnerResult chunked = RunExperts(world.get(), chunks, &thread, precision);
      ExpectClose(chunked.y, whole.y, "expert outputs");
      ExpectClose(chunked.dx, whole.dx, "input gradients");
      ExpectClose(chunked.g0, whole.g0, "wi_0 gradient");
      ExpectClose(chunked.g1, whole.g1, "wi_1 gradient");
      ExpectClose(chunked.go, whole.go, "wo gradient");
      EXPECT_EQ(chunked.counters.rows_remote, whole.counters.rows_remote);
      EXPECT_EQ(chunked.counters.rows_local, whole.counters.rows_local);
      EXPECT_EQ(chunked.counters.bytes_remote, whole.counters.bytes_remote);
      EXPECT_EQ(chunked.counters.exchanges, whole.counters.exchanges);
    }
  }
}

// The trainer: chunked exchanges give the unchunked losses, on an expert group spanning the ranks,
// with drops (LayoutJob's capacity factor 1), microbatches and BF16.
TEST(ChunkedExchangeMpi, TrainerLossesMatchUnchunked) {
  auto world = MakeWorldCommunicator();
  for (int variant = 0; variant < 3; ++variant) {
    JobSpec spec = testing::OnMesh(testing::LayoutJob(8), 8, 4, 8, variant == 1 ? 2 : 1);
    if (variant == 2) spec.mutable_train()->set_compute_dtype(BF16);
    JobSpec chunked = spec;
    chunked.mutable_train()->set_expert_exchange_chunks(3);
    auto a = Trainer::Create(spec, world.get()).value();
    auto b = Trainer::Create(chunked, world.get()).value();
    for (int s = 0; s < 3; ++s) {
      const StepResult ra = a->Step(), rb = b->Step();
      const double tolerance = variant == 2 ? 1e-3 : 1e-5;
      EXPECT_NEAR(ra.loss, rb.loss, tolerance * ra.loss) << "variant " << variant << " step " << s;
    }
    ASSERT_NE(a->runner(), nullptr);
    EXPECT_EQ(a->runner()->counters().rows_remote, b->runner()->counters().rows_remote);
    if (world->size() > 1) {
      EXPECT_GT(b->runner()->counters().rows_remote, 0);
    }
  }
}

}  // namespace
}  // namespace openmoe
