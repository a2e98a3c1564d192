// Measured phase timings over MPI ranks (tiny's model on 4 chips): where rows cross ranks
// (expert_parallel 4 over 2 or 4 ranks) dispatch and combine appear with their MPI time inside
// them; where every rank hosts whole expert groups (expert_parallel 1) they do not. Each rank's
// phases add up to its step time, and timing / timing_mean are the maximum / mean of the ranks'
// own figures, gathered here independently.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "core/timer.h"
#include "gtest/gtest.h"
#include "launch/metrics.h"
#include "launch/phase_report.h"
#include "launch/trainer.h"
#include "parallel/communicator.h"
#include "parallel/cost/cost_model.h"

namespace openmoe {
namespace {

// launch/configs/tiny.pbtxt, written out (this suite has no source directory to load it from).
JobSpec TinySpec(int64_t expert_parallel) {
  JobSpec spec;
  ModelConfig* m = spec.mutable_model();
  m->set_vocab_size(512);
  m->set_vocab_pad_multiple(128);
  m->set_num_layers(4);
  m->set_d_model(64);
  m->set_num_heads(4);
  m->set_head_dim(16);
  m->set_d_ff(128);
  m->set_ffn_form(FFN_OPENMOE);
  m->set_num_experts(4);
  m->set_moe_interval(2);
  m->set_extra_dense_ffn(true);
  RouterConfig* r = spec.mutable_router();
  r->set_top_k(2);
  r->set_group_size(128);
  r->set_capacity_factor(1.25);
  r->set_min_capacity(4);
  TopologyConfig* t = spec.mutable_topology();
  t->set_chip("tpu_v3");
  t->set_num_chips(4);
  t->set_torus_x(2);
  t->set_torus_y(2);
  t->set_chips_per_host(4);
  spec.mutable_mesh()->set_expert_parallel(expert_parallel);
  spec.mutable_schedule()->set_peak_learning_rate(0.01);
  spec.mutable_schedule()->set_warmup_steps(10000);
  spec.mutable_train()->set_steps(10);
  spec.mutable_train()->set_batch_rows(8);
  spec.mutable_train()->set_seq_len(64);
  spec.mutable_data()->set_source(DATA_SYNTHETIC_MARKOV);
  spec.mutable_data()->mutable_synthetic()->set_branching(4);
  spec.mutable_data()->mutable_synthetic()->set_seed(1234);
  return spec;
}

constexpr Phase kExchangePhases[] = {Phase::kDispatchForward, Phase::kDispatchBackward,
                                     Phase::kCombineForward, Phase::kCombineBackward};

// Every rank's value, gathered by a sum of one-hot vectors.
std::vector<double> Gather(Communicator& world, double mine) {
  std::vector<double> all(world.size(), 0.0);
  all[world.rank()] = mine;
  world.AllReduceSum(all.data(), world.size());
  return all;
}

// The second step (the first allocates every buffer) of `spec` on the world.
StepResult SecondStep(const JobSpec& spec, Communicator& world, std::string* record) {
  auto trainer = Trainer::Create(spec, &world).value();
  trainer->Step();
  StepResult r = trainer->Step();
  *record = StepRecordJson(spec, r, PredictStepTime(spec, trainer->mesh()), "test");
  return r;
}

void ExpectSumsAndReductions(const StepResult& r, Communicator& world) {
  double sum = 0;
  for (double s : r.timing.local) sum += s;
  EXPECT_NEAR(sum, r.seconds, 0.1 * r.seconds) << "rank " << world.rank();
  for (int p = 0; p < kNumPhases; ++p) {
    const std::vector<double> all = Gather(world, r.timing.local[p]);
    double total = 0;
    for (double v : all) total += v;
    EXPECT_EQ(r.timing.max[p], *std::max_element(all.begin(), all.end()))
        << PhaseName(static_cast<Phase>(p));
    EXPECT_NEAR(r.timing.mean[p], total / world.size(), 1e-12) << PhaseName(static_cast<Phase>(p));
  }
}

TEST(PhaseTimingMpi, RowsCrossingRanksShowDispatchCombineAndTheirMpiTime) {
  auto world = MakeWorldCommunicator();
  std::string record;
  const StepResult r = SecondStep(TinySpec(4), *world, &record);  // 1 or 2 chips per rank < 4
  ExpectSumsAndReductions(r, *world);
  double exchange = 0;
  for (Phase p : kExchangePhases) {
    EXPECT_TRUE(r.timing.ran[static_cast<int>(p)]) << PhaseName(p);
    EXPECT_GT(r.timing.local[static_cast<int>(p)], 0) << PhaseName(p);
    exchange += r.timing.local[static_cast<int>(p)];
  }
  for (Phase p : {Phase::kExpertsForward, Phase::kExpertsBackward, Phase::kRouterForward,
                  Phase::kGradAllReduce}) {
    EXPECT_TRUE(r.timing.ran[static_cast<int>(p)]) << PhaseName(p);
  }
  EXPECT_TRUE(r.timing.mpi_ran);
  const double counts = r.timing.mpi_local[static_cast<int>(MpiDetail::kCounts)];
  const double rows = r.timing.mpi_local[static_cast<int>(MpiDetail::kRows)];
  EXPECT_GT(counts, 0);
  EXPECT_GT(rows, 0);
  // Inclusive details: the counts exchange runs inside dispatch_forward, the rows inside all four.
  EXPECT_LE(counts, r.timing.local[static_cast<int>(Phase::kDispatchForward)]);
  EXPECT_LE(counts + rows, exchange);
  // The per-step reduction (outside the step's time): printed for the overhead figure.
  PhaseTimer stopped;
  Timer t;
  for (int i = 0; i < 10; ++i) ReducePhaseTimes(stopped, *world);
  const double reduction = t.Seconds() / 10;
  double one = 1;  // the smallest collective, for scale: on a busy machine both wait alike
  t.Reset();
  for (int i = 0; i < 10; ++i) world->AllReduceSum(&one, 1);
  const double smallest = t.Seconds() / 10;
  if (world->rank() == 0) {
    std::printf("%d ranks: step %.1f ms, phase-time reduction %.1f us (one double: %.1f us)\n",
                world->size(), r.seconds * 1e3, reduction * 1e6, smallest * 1e6);
    EXPECT_NE(record.find("\"timing_exchange\":{\"counts\":"), std::string::npos) << record;
    EXPECT_NE(record.find("\"combine_backward\":"), std::string::npos) << record;
  }
}

TEST(PhaseTimingMpi, WholeExpertGroupsOnEveryRankHaveNoExchange) {
  auto world = MakeWorldCommunicator();
  std::string record;
  const StepResult r = SecondStep(TinySpec(1), *world, &record);  // every rank holds all experts
  ExpectSumsAndReductions(r, *world);
  for (Phase p : kExchangePhases) {
    EXPECT_FALSE(r.timing.ran[static_cast<int>(p)]) << PhaseName(p);
    EXPECT_EQ(r.timing.max[static_cast<int>(p)], 0.0) << PhaseName(p);
  }
  EXPECT_TRUE(r.timing.ran[static_cast<int>(Phase::kExpertsForward)]);
  EXPECT_FALSE(r.timing.mpi_ran);
  if (world->rank() == 0) {
    EXPECT_EQ(record.find("\"timing_exchange\""), std::string::npos) << record;
    EXPECT_EQ(record.find("\"combine_backward\":", record.find("\"timing\":")),
              record.find("\"combine_backward\":", record.find("\"timing_predicted\":")))
        << "measured combine_backward present: " << record;
  }
}

}  // namespace
}  // namespace openmoe
