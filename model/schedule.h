// The learning-rate schedule: lr(t) = peak * sqrt(warmup / max(t, warmup)), t from 0.
// With peak 0.01 and warmup 10000 this is T5X's rsqrt schedule 1 / sqrt(max(t, 10000)):
// flat during warmup, then inverse square root.
#pragma once

#include <cstdint>

#include "proto/job.pb.h"

namespace openmoe {

double LearningRate(const ScheduleConfig& config, int64_t step);

}  // namespace openmoe
