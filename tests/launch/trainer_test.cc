// The training step end to end: exact gradient accumulation, and learning on a generated task.
#include "launch/trainer.h"

#include <cmath>

#include "core/kernels.h"
#include "data/synthetic.h"
#include "gtest/gtest.h"

namespace openmoe {
namespace {

JobSpec SmallMoeSpec() {
  JobSpec spec;
  ModelConfig* m = spec.mutable_model();
  m->set_vocab_size(64);
  m->set_vocab_pad_multiple(64);
  m->set_num_layers(2);
  m->set_d_model(32);
  m->set_num_heads(2);
  m->set_head_dim(16);
  m->set_d_ff(64);
  m->set_num_experts(4);
  m->set_moe_interval(2);
  spec.mutable_router()->set_group_size(64);
  spec.mutable_train()->set_batch_rows(8);
  spec.mutable_train()->set_seq_len(32);
  spec.mutable_train()->set_seed(5);
  spec.mutable_data()->mutable_synthetic()->set_branching(3);
  spec.mutable_schedule()->set_warmup_steps(100);
  spec.mutable_schedule()->set_peak_learning_rate(0.01);
  return spec;
}

// The same global batch cut into 1, 2 or 4 microbatches gives the same loss and gradient:
// every term is normalised by global counts, never per microbatch.
TEST(Trainer, GradientAccumulationIsExact) {
  JobSpec spec = SmallMoeSpec();
  auto reference = Trainer::Create(spec).value();
  const Batch batch = reference->NextLocalBatch().value();
  const DecoderSums ref = reference->ComputeGradients(batch);
  const Tensor ref_grads = reference->grads();
  const double ref_norm = std::sqrt(SumSquares(ref_grads.data(), ref_grads.size()));
  for (int micro : {2, 4}) {
    spec.mutable_train()->set_microbatches(micro);
    // Groups of 64 tokens still fit a microbatch of 2 rows x 32.
    auto trainer = Trainer::Create(spec).value();
    const DecoderSums got = trainer->ComputeGradients(batch);
    EXPECT_NEAR(got.loss, ref.loss, 1e-6 * std::fabs(ref.loss)) << micro << " microbatches";
    double diff = 0;
    for (int64_t i = 0; i < ref_grads.size(); ++i) {
      const double d = trainer->grads()[i] - ref_grads[i];
      diff += d * d;
    }
    EXPECT_LT(std::sqrt(diff), 1e-5 * ref_norm) << micro << " microbatches";
  }
}

// On a sparse Markov chain the loss must fall well below the unigram entropy (what a model
// without context can reach) within a bounded number of steps.
TEST(Trainer, LearnsMarkovChainBelowUnigramEntropy) {
  JobSpec spec = SmallMoeSpec();
  auto trainer = Trainer::Create(spec).value();
  const SyntheticMarkovSource source(64, 3, spec.data().synthetic().seed());
  const double unigram = source.UnigramEntropy();
  const double floor = source.ConditionalEntropy();
  ASSERT_LT(floor, 0.5 * unigram);  // the task is learnable from context
  double first = 0, last = 0;
  const int steps = 300, window = 20;
  for (int i = 0; i < steps; ++i) {
    const StepResult r = trainer->Step();
    const double ce = r.sums.lm.cross_entropy / r.sums.lm.weight;
    ASSERT_TRUE(std::isfinite(ce));
    if (i == 0) first = ce;
    if (i >= steps - window) last += ce / window;
  }
  EXPECT_GT(first, 0.9 * unigram);  // the first step is near chance
  // Well below unigram: at most halfway between the entropy rate and the unigram entropy.
  EXPECT_LT(last, 0.5 * (unigram + floor)) << "unigram " << unigram << " floor " << floor;
}

}  // namespace
}  // namespace openmoe
