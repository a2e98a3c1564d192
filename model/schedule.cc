#include "model/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace openmoe {
namespace {

double Rsqrt(const ScheduleConfig& config, int64_t step) {
  // warmup 0 would make the formula 0 / 0 at step 0; a warmup of 1 is the plain rsqrt schedule
  // peak / sqrt(max(t, 1)), which is what "no warmup" means.
  const double warmup = static_cast<double>(std::max<int64_t>(config.warmup_steps(), 1));
  const double t = std::max(static_cast<double>(step), warmup);
  return config.peak_learning_rate() * std::sqrt(warmup / t);
}

double WarmupCosine(const ScheduleConfig& config, int64_t step, int64_t train_steps) {
  const double peak = config.peak_learning_rate();
  const int64_t warmup = std::max<int64_t>(config.warmup_steps(), 0);
  if (step < warmup) {
    return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  }
  const double floor = peak * config.final_learning_rate_fraction();
  const int64_t decay = DecayEndStep(config, train_steps);
  if (step >= decay) return floor;
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(decay - warmup);
  return floor + (peak - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace

int64_t DecayEndStep(const ScheduleConfig& config, int64_t train_steps) {
  return config.decay_steps() > 0 ? config.decay_steps() : train_steps;
}

double LearningRate(const ScheduleConfig& config, int64_t step, int64_t train_steps) {
  switch (config.kind()) {
    case SCHEDULE_WARMUP_COSINE:
      return WarmupCosine(config, step, train_steps);
    case SCHEDULE_CONSTANT:
      return config.peak_learning_rate();
    case SCHEDULE_RSQRT:
    default:
      return Rsqrt(config, step);
  }
}

}  // namespace openmoe
