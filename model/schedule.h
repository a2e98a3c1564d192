// The learning-rate schedule, t the step from 0 and peak = schedule.peak_learning_rate:
//   SCHEDULE_RSQRT:   lr(t) = peak * sqrt(warmup / max(t, warmup)). Peak 0.01 and warmup 10000
//                     give T5X's 1 / sqrt(max(t, 10000)): flat during warmup, then rsqrt.
//   SCHEDULE_WARMUP_COSINE: lr(t) = peak * (t + 1) / warmup for t < warmup (from peak / warmup
//                     to peak); then floor + (peak - floor) * (1 + cos(pi * p)) / 2 with
//                     p = (t - warmup) / (decay - warmup), reaching floor = peak *
//                     final_learning_rate_fraction at t = decay; floor after that. decay is
//                     schedule.decay_steps, or train_steps when that is 0.
//   SCHEDULE_CONSTANT: peak.
#pragma once

#include <cstdint>

#include "proto/job.pb.h"

namespace openmoe {

// train_steps: the run's train.steps (the cosine's end when decay_steps is 0).
double LearningRate(const ScheduleConfig& config, int64_t step, int64_t train_steps);

// The step at which SCHEDULE_WARMUP_COSINE reaches its floor.
int64_t DecayEndStep(const ScheduleConfig& config, int64_t train_steps);

}  // namespace openmoe
