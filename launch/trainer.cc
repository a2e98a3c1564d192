#include "launch/trainer.h"

#include <cmath>

#include "core/check.h"
#include "core/kernels.h"
#include "core/timer.h"
#include "model/schedule.h"

namespace openmoe {

Trainer::Trainer(const JobSpec& spec)
    : spec_(spec),
      dims_(DimsFromSpec(spec)),
      layout_(dims_),
      params_({layout_.total_size()}),
      grads_({layout_.total_size()}),
      optimizer_(spec.optimizer(), layout_),
      decoder_(layout_, RoutingFromSpec(spec, /*eval=*/false)),
      source_(dims_.vocab_size, spec.data().synthetic().branching(), spec.data().synthetic().seed()) {
  InitParams(layout_, spec.train().seed(), params_.data());
}

Batch Trainer::NextBatch() {
  Batch batch;
  const int64_t rows = spec_.train().batch_rows();
  source_.FillRows(rows_consumed_, rows, spec_.train().seq_len(), &batch);
  rows_consumed_ += rows;
  return batch;
}

LossScales Trainer::ScalesFor(const Batch& batch) const {
  double weight = 0;
  for (float w : batch.loss_weights) weight += w;
  const double tokens = static_cast<double>(batch.num_tokens());
  const double moe_layers = static_cast<double>(dims_.NumMoeLayers());
  LossScales s;
  s.lm_normalizer = weight > 0 ? 1.0 / weight : 0.0;
  s.output_z_weight = spec_.loss().output_z_loss_weight();
  if (moe_layers > 0) {
    const double groups = tokens / static_cast<double>(spec_.router().group_size());
    s.load_balance_scale = spec_.router().aux_loss_weight() / (moe_layers * groups);
    s.router_z_scale = spec_.router().z_loss_weight() / (moe_layers * tokens);
  }
  return s;
}

DecoderSums Trainer::ComputeGradients(const Batch& batch) {
  const LossScales scales = ScalesFor(batch);
  const int64_t micro = spec_.train().microbatches();
  OPENMOE_CHECK(batch.rows % micro == 0);
  const int64_t rows = batch.rows / micro;
  grads_.Zero();
  DecoderSums total;
  for (int64_t m = 0; m < micro; ++m) {
    const Batch mb = micro == 1 ? batch : batch.Slice(m * rows, rows);
    total.Add(decoder_.Forward(params_.data(), mb, scales, spec_.logging().position_buckets()));
    decoder_.Backward(params_.data(), mb, scales, grads_.data());
  }
  return total;
}

StepResult Trainer::Step() {
  Timer timer;
  StepResult r;
  r.step = step_;
  const Batch batch = NextBatch();
  r.sums = ComputeGradients(batch);
  r.loss = r.sums.loss;
  r.tokens = batch.num_tokens();
  r.grad_norm = std::sqrt(SumSquares(grads_.data(), grads_.size()));
  r.learning_rate = LearningRate(spec_.schedule(), step_);
  optimizer_.Update(step_, r.learning_rate, params_.data(), grads_.data());
  ++step_;
  r.seconds = timer.Seconds();
  return r;
}

}  // namespace openmoe
