#include "data/synthetic.h"

#include <cmath>

#include "gtest/gtest.h"

namespace openmoe {
namespace {

TEST(SyntheticMarkov, RowsDependOnlyOnTheirGlobalIndex) {
  const SyntheticMarkovSource source(100, 4, 9);
  Batch all, part;
  source.FillRows(0, 13, 16, &all);
  source.FillRows(10, 3, 16, &part);
  for (int64_t i = 0; i < 3 * 16; ++i) {
    EXPECT_EQ(part.tokens[i], all.tokens[10 * 16 + i]);
    EXPECT_EQ(part.targets[i], all.targets[10 * 16 + i]);
  }
}

TEST(SyntheticMarkov, TargetsAreTheNextTokens) {
  const SyntheticMarkovSource source(50, 2, 1);
  Batch b;
  source.FillRows(0, 2, 20, &b);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t s = 0; s + 1 < 20; ++s) EXPECT_EQ(b.targets[r * 20 + s], b.tokens[r * 20 + s + 1]);
}

TEST(SyntheticMarkov, EntropyRateIsBelowUnigram) {
  const SyntheticMarkovSource source(256, 4, 2);
  // Branching 4 with probabilities ~ 1/(j+1)^2: at most log 4 nats per token.
  EXPECT_LE(source.ConditionalEntropy(), std::log(4.0) + 1e-9);
  EXPECT_GT(source.UnigramEntropy(), 0.8 * std::log(256.0));
}

TEST(SyntheticMarkov, BranchingOneIsDeterministic) {
  const SyntheticMarkovSource source(30, 1, 4);
  EXPECT_NEAR(source.ConditionalEntropy(), 0.0, 1e-12);
}

}  // namespace
}  // namespace openmoe
