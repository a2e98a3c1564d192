#include "model/schedule.h"

#include <cmath>

#include "gtest/gtest.h"

namespace openmoe {
namespace {

TEST(ScheduleTest, FlatThroughWarmupThenInverseSquareRoot) {
  ScheduleConfig config;
  config.set_peak_learning_rate(0.01);
  config.set_warmup_steps(10000);
  EXPECT_DOUBLE_EQ(LearningRate(config, 0, /*train_steps=*/0), 0.01);
  EXPECT_DOUBLE_EQ(LearningRate(config, 5000, /*train_steps=*/0), 0.01);
  EXPECT_DOUBLE_EQ(LearningRate(config, 10000, /*train_steps=*/0), 0.01);
  EXPECT_DOUBLE_EQ(LearningRate(config, 40000, /*train_steps=*/0), 0.005);
}

TEST(ScheduleTest, DefaultsAreT5xRsqrt) {
  // 1 / sqrt(max(t, 10000)).
  const ScheduleConfig config;
  for (const int64_t t : {0, 9999, 10001, 250000})
    EXPECT_DOUBLE_EQ(LearningRate(config, t, /*train_steps=*/0), 1.0 / std::sqrt(std::max<double>(t, 10000))) << t;
}

TEST(ScheduleTest, ZeroWarmupIsPlainRsqrtFromStepOne) {
  ScheduleConfig config;
  config.set_peak_learning_rate(0.5);
  config.set_warmup_steps(0);
  EXPECT_DOUBLE_EQ(LearningRate(config, 0, /*train_steps=*/0), 0.5);
  EXPECT_DOUBLE_EQ(LearningRate(config, 1, /*train_steps=*/0), 0.5);
  EXPECT_DOUBLE_EQ(LearningRate(config, 4, /*train_steps=*/0), 0.25);
  EXPECT_DOUBLE_EQ(LearningRate(config, 100, /*train_steps=*/0), 0.05);
}

}  // namespace
}  // namespace openmoe
