// Warmup + cosine and constant schedules against their closed forms at chosen steps.
#include <cmath>
#include <numbers>

#include "gtest/gtest.h"
#include "model/schedule.h"

namespace openmoe {
namespace {

ScheduleConfig Cosine(double peak, int64_t warmup, int64_t decay, double floor_fraction) {
  ScheduleConfig c;
  c.set_kind(SCHEDULE_WARMUP_COSINE);
  c.set_peak_learning_rate(peak);
  c.set_warmup_steps(warmup);
  c.set_decay_steps(decay);
  c.set_final_learning_rate_fraction(floor_fraction);
  return c;
}

TEST(ScheduleKindsTest, WarmupRisesLinearlyFromPeakOverWarmupToPeak) {
  const ScheduleConfig c = Cosine(1e-3, 4, 20, 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(c, 0, 100), 1e-3 / 4);
  EXPECT_DOUBLE_EQ(LearningRate(c, 1, 100), 2e-3 / 4);
  EXPECT_DOUBLE_EQ(LearningRate(c, 3, 100), 1e-3);
}

TEST(ScheduleKindsTest, CosineFromPeakToFloorAtDecayStepsThenFlat) {
  const ScheduleConfig c = Cosine(1e-3, 4, 20, 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(c, 4, 100), 1e-3);        // cos(0) = 1: the peak
  EXPECT_NEAR(LearningRate(c, 12, 100), 0.55e-3, 1e-15);  // halfway: (peak + floor) / 2
  // A quarter of the way: floor + (peak - floor) * (1 + cos(pi / 4)) / 2.
  EXPECT_NEAR(LearningRate(c, 8, 100), 1e-4 + 9e-4 * (1 + std::sqrt(0.5)) / 2, 1e-15);
  EXPECT_DOUBLE_EQ(LearningRate(c, 20, 100), 1e-4);
  EXPECT_DOUBLE_EQ(LearningRate(c, 99, 100), 1e-4);
}

TEST(ScheduleKindsTest, DecayStepsZeroMeansTrainSteps) {
  const ScheduleConfig c = Cosine(2.0, 10, 0, 0.0);
  EXPECT_NEAR(LearningRate(c, 55, 100), 1.0, 1e-15);  // halfway between 10 and 100
  EXPECT_DOUBLE_EQ(LearningRate(c, 100, 100), 0.0);
  EXPECT_EQ(DecayEndStep(c, 100), 100);
  EXPECT_EQ(DecayEndStep(Cosine(2.0, 10, 40, 0.0), 100), 40);
}

TEST(ScheduleKindsTest, WarmupEqualToDecayJumpsToTheFloor) {
  const ScheduleConfig c = Cosine(1.0, 5, 5, 0.25);
  EXPECT_DOUBLE_EQ(LearningRate(c, 4, 10), 1.0);
  EXPECT_DOUBLE_EQ(LearningRate(c, 5, 10), 0.25);
}

TEST(ScheduleKindsTest, ConstantIsPeakAtEveryStep) {
  ScheduleConfig c;
  c.set_kind(SCHEDULE_CONSTANT);
  c.set_peak_learning_rate(3e-4);
  c.set_warmup_steps(1000);
  for (int64_t t : {0, 1, 999, 1000, 123456}) EXPECT_EQ(LearningRate(c, t, 10), 3e-4) << t;
}

}  // namespace
}  // namespace openmoe
