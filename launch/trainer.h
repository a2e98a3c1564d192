// Trainer: the model, its parameters, gradients and optimizer state, and one training step.
//
// A step takes the global batch (train.batch_rows rows), cuts it into train.microbatches
// microbatches, accumulates exact gradients (every loss term is normalised by global counts, see
// LossScales), then applies Adafactor with the schedule's learning rate. Single process for now.
#pragma once

#include <cstdint>
#include <memory>

#include "core/batch.h"
#include "core/tensor.h"
#include "data/synthetic.h"
#include "model/adafactor.h"
#include "model/decoder.h"
#include "model/params.h"
#include "proto/job.pb.h"

namespace openmoe {

struct StepResult {
  int64_t step = 0;          // the step just taken (from 0)
  DecoderSums sums;          // summed over microbatches
  double loss = 0;           // the full objective
  double learning_rate = 0;
  double grad_norm = 0;      // global L2 norm of the gradient before the update
  int64_t tokens = 0;        // tokens in the global batch
  double seconds = 0;        // wall time of the step
};

class Trainer {
 public:
  explicit Trainer(const JobSpec& spec);

  // Reads the next global batch from the data source and takes one optimizer step.
  StepResult Step();

  // Loss and gradients (into grads(), overwritten) of `batch` at the current parameters,
  // microbatched per the spec. No update.
  DecoderSums ComputeGradients(const Batch& batch);

  // The next global batch of the data source (advances the iterator).
  Batch NextBatch();

  LossScales ScalesFor(const Batch& batch) const;

  const JobSpec& spec() const { return spec_; }
  const ParamLayout& layout() const { return layout_; }
  Tensor& params() { return params_; }
  Tensor& grads() { return grads_; }
  int64_t step() const { return step_; }

 private:
  JobSpec spec_;
  ModelDims dims_;
  ParamLayout layout_;
  Tensor params_;
  Tensor grads_;
  Adafactor optimizer_;
  Decoder decoder_;
  SyntheticMarkovSource source_;
  int64_t step_ = 0;
  int64_t rows_consumed_ = 0;
};

}  // namespace openmoe
