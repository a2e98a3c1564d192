// Token-id routing on several ranks: the counts are summed over the ranks before the table is
// built, so every rank holds the statistics and table a one-chip, one-process run of the same job
// builds, and the steps around the switch give its losses.
#include <cmath>
#include <cstdlib>

#include "gtest/gtest.h"
#include "launch/trainer.h"
#include "tests/testing/layout_check.h"

namespace openmoe {
namespace {

using testing::LayoutJob;
using testing::OnMesh;

void ExpectSameTableAsOneChip(const JobSpec& spec, Communicator* world) {
  auto reference = Trainer::Create(OnMesh(spec, 1, 1, 1)).value();
  auto trainer = Trainer::Create(spec, world).value();
  for (int s = 0; s < 4; ++s) {
    const double want = reference->Step().loss, got = trainer->Step().loss;
    EXPECT_NEAR(got, want, 1e-5 * std::fabs(want)) << "step " << s;
  }
  const TokenIdTables& a = *reference->token_id_tables();
  const TokenIdTables& b = *trainer->token_id_tables();
  ASSERT_TRUE(a.built() && b.built());
  // Counts equal exactly; probability sums (each token's probability rounded to 2^-20 first) to
  // one unit per occurrence, since another layout may round a probability's last bit otherwise.
  ASSERT_EQ(a.stats().size(), b.stats().size());
  const int64_t width = 1 + 2 * a.num_experts();
  int64_t count_mismatch = 0, prob_mismatch = 0;
  for (size_t i = 0; i < a.stats().size(); ++i) {
    const int64_t column = static_cast<int64_t>(i) % width;
    const int64_t occurrences = a.stats()[i - column];
    if (column <= a.num_experts()) {
      count_mismatch += a.stats()[i] != b.stats()[i];
    } else {
      prob_mismatch += std::llabs(a.stats()[i] - b.stats()[i]) > occurrences;
    }
  }
  EXPECT_EQ(count_mismatch, 0) << "rank " << world->rank();
  EXPECT_EQ(prob_mismatch, 0) << "rank " << world->rank();
  int64_t expert_mismatch = 0;
  for (int64_t layer : a.moe_layers())
    for (int32_t id = 0; id < a.vocab(); ++id)
      for (int64_t j = 0; j < a.top_k(); ++j)
        expert_mismatch += a.Experts(layer, id)[j] != b.Experts(layer, id)[j];
  EXPECT_EQ(expert_mismatch, 0) << "rank " << world->rank();
}

TEST(TokenIdRoutingMpi, TableIsTheOneChipTable) {
  auto world = MakeWorldCommunicator();
  for (int64_t ep : {1, 4}) {
    JobSpec spec = OnMesh(LayoutJob(8), 8, 4, ep);
    spec.mutable_router()->set_token_id_routing_after_steps(2);
    ExpectSameTableAsOneChip(spec, world.get());
  }
}

}  // namespace
}  // namespace openmoe
