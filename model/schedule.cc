#include "model/schedule.h"

#include <algorithm>
#include <cmath>

namespace openmoe {

double LearningRate(const ScheduleConfig& config, int64_t step) {
  // warmup 0 would make the formula 0 / 0 at step 0; a warmup of 1 is the plain rsqrt schedule
  // peak / sqrt(max(t, 1)), which is what "no warmup" means.
  const double warmup = static_cast<double>(std::max<int64_t>(config.warmup_steps(), 1));
  const double t = std::max(static_cast<double>(step), warmup);
  return config.peak_learning_rate() * std::sqrt(warmup / t);
}

}  // namespace openmoe
