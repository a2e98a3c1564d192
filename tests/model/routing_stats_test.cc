// Routing statistics on hand-built routing with known answers.
#include "model/routing_stats.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

namespace openmoe {
namespace {

TEST(RoutingStatsTest, RouterSendingEachIdToAFixedExpertHasSpecializationOne) {
  const int64_t experts = 4;
  std::vector<int32_t> ids, top1;
  std::mt19937 gen(1);
  for (int i = 0; i < 5000; ++i) {
    const int32_t id = static_cast<int32_t>(gen() % 50);
    ids.push_back(id);
    top1.push_back(id % experts);
  }
  const Specialization s = TokenSpecialization(ids, top1, experts, /*min_count=*/10);
  EXPECT_DOUBLE_EQ(s.value, 1.0);
  EXPECT_EQ(s.ids, 50);
  EXPECT_EQ(s.occurrences, 5000);
  // The control of the same layer is far below: ~100 occurrences per id spread over 4 experts.
  EXPECT_LT(SpecializationControl(ids, top1, experts, 10, 4, 0).value, 0.4);
  for (const TableEntry& t : TokenExpertTable(ids, top1, experts, 10)) {
    EXPECT_EQ(t.expert, t.id % experts);
  }
  // Expert 1 only ever sees ids 1, 5, 9, ... each with share 1.
  const std::vector<std::vector<TopToken>> top = TopTokensPerExpert(ids, top1, experts, 10, 5);
  ASSERT_EQ(top[1].size(), 5u);
  for (const TopToken& t : top[1]) {
    EXPECT_EQ(t.id % experts, 1);
    EXPECT_DOUBLE_EQ(t.share, 1.0);
  }
}

TEST(RoutingStatsTest, UniformRandomRouterGivesTheControlValue) {
  // Each occurrence's expert drawn uniformly at random, independently of its id: the expected
  // specialisation is the control's by definition. Averaged over 40 such routings.
  const int64_t experts = 4;
  std::mt19937 gen(7);
  std::vector<int32_t> ids;
  for (int i = 0; i < 2000; ++i) ids.push_back(static_cast<int32_t>(gen() % 40));
  double spec = 0, control = 0;
  const int trials = 40;
  for (int t = 0; t < trials; ++t) {
    std::vector<int32_t> top1;
    for (size_t i = 0; i < ids.size(); ++i) top1.push_back(static_cast<int32_t>(gen() % experts));
    spec += TokenSpecialization(ids, top1, experts, 8).value / trials;
    control += SpecializationControl(ids, top1, experts, 8, 8, t).value / trials;
  }
  EXPECT_GT(control, 0.25 + 0.05);  // the max of 4 noisy counts of ~50 is well above 1/4
  EXPECT_NEAR(spec, control, 0.005);
}

// E[max multinomial count] / n by enumerating every assignment of n occurrences to E experts.
double ExpectedMaxShare(const std::vector<double>& p, int n) {
  const int e = static_cast<int>(p.size());
  double expect = 0;
  int total = 1;
  for (int i = 0; i < n; ++i) total *= e;
  for (int code = 0; code < total; ++code) {
    std::vector<int> counts(e, 0);
    double prob = 1;
    for (int i = 0, c = code; i < n; ++i, c /= e) {
      ++counts[c % e];
      prob *= p[c % e];
    }
    int mx = 0;
    for (int c : counts) mx = std::max(mx, c);
    expect += prob * mx / n;
  }
  return expect;
}

TEST(RoutingStatsTest, ControlMatchesTheClosedFormExpectation) {
  // One id counted (5 occurrences), one id below min_count: the overall top-1 share is over
  // every occurrence (8 of them: expert 0 x4, 1 x2, 2 x2).
  const std::vector<int32_t> ids = {7, 7, 7, 7, 7, 3, 3, 3};
  const std::vector<int32_t> top1 = {0, 0, 1, 2, 0, 0, 1, 2};
  const Specialization s = SpecializationControl(ids, top1, 3, /*min_count=*/5, 40000, 11);
  EXPECT_EQ(s.ids, 1);
  EXPECT_EQ(s.occurrences, 5);
  EXPECT_NEAR(s.value, ExpectedMaxShare({0.5, 0.25, 0.25}, 5), 0.003);
  // And the statistic itself: id 7 sends 3 of 5 to expert 0.
  EXPECT_DOUBLE_EQ(TokenSpecialization(ids, top1, 3, 5).value, 0.6);
  // Two ids, weighted by count: (3 + 2) / (5 + 3).
  EXPECT_DOUBLE_EQ(TokenSpecialization(ids, top1, 3, 3).value, 4.0 / 8.0);
}

TEST(RoutingStatsTest, JensenShannonKnownValues) {
  EXPECT_DOUBLE_EQ(JensenShannon({0.5, 0.5}, {0.5, 0.5}), 0.0);
  EXPECT_DOUBLE_EQ(JensenShannon({1, 0}, {0, 1}), 1.0);
  // p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4).
  const double kl_p = std::log2(1 / 0.75);
  const double kl_q = 0.5 * std::log2(0.5 / 0.75) + 0.5 * std::log2(0.5 / 0.25);
  EXPECT_NEAR(JensenShannon({1, 0}, {0.5, 0.5}), 0.5 * (kl_p + kl_q), 1e-12);
  const std::vector<double> share = ExpertShare({0, 1, 1, 3}, 4);
  EXPECT_EQ(share, (std::vector<double>{0.25, 0.5, 0, 0.25}));
}

TEST(RoutingStatsTest, DropByPositionCountsEachChoiceApart) {
  RoutedTokens r;
  r.num_experts = 2;
  r.top_k = 2;
  const int32_t experts[2] = {0, 1};
  const int32_t kept[2] = {0, 0}, second_dropped[2] = {0, -1}, both_dropped[2] = {-1, -1};
  // seq_len 4, 2 buckets: positions 0-1 and 2-3.
  r.Add(5, 0, 0, experts, kept);
  r.Add(5, 0, 1, experts, second_dropped);
  r.Add(5, 0, 2, experts, second_dropped);
  r.Add(5, 1, 3, experts, both_dropped);
  const DropByPosition d = DropFractionByPosition(r, 4, 2);
  EXPECT_EQ(d.tokens, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(d.by_choice[0], (std::vector<double>{0, 0.5}));
  EXPECT_EQ(d.by_choice[1], (std::vector<double>{0.5, 1}));
  EXPECT_EQ(r.OfSource(1).size(), 1);
  EXPECT_EQ(r.OfSource(1).position[0], 3);
}

TEST(RoutingStatsTest, AgreementOfTokensAndOfTables) {
  EXPECT_DOUBLE_EQ(Top1Agreement({0, 1, 2, 3}, {0, 1, 0, 0}), 0.5);
  // b's table: id 1 -> 0 (count 3), id 2 -> 1 (count 1), id 4 -> 1 (count 6); a agrees on id 1,
  // disagrees on id 2 and lacks id 4: 3 / 10.
  const std::vector<TableEntry> a = {{1, 0, 2}, {2, 0, 5}};
  const std::vector<TableEntry> b = {{1, 0, 3}, {2, 1, 1}, {4, 1, 6}};
  EXPECT_DOUBLE_EQ(TableAgreement(a, b), 0.3);
  EXPECT_DOUBLE_EQ(TableAgreement(b, b), 1.0);
  // Ties in the table go to the lower expert.
  const std::vector<TableEntry> t = TokenExpertTable({9, 9}, {1, 0}, 2, 1);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].expert, 0);
  EXPECT_EQ(t[0].count, 2);
}

}  // namespace
}  // namespace openmoe
