// The trainer's overlapped gradient reduction (train.overlap_grad_reduce, buckets started as the
// backward finishes them, on the progress thread) against the blocking path: on every data x
// expert x model layout of 2 to 16 chips this world hosts, with microbatches and BF16 compute.
// Bit for bit on 2 ranks (each sum is one commutative addition), within fp32 summation rounding
// on 4. And the BF16 wire trains like the FP32 one.
#include <cmath>

#include "gtest/gtest.h"
#include "tests/testing/layout_check.h"

namespace openmoe {
namespace {

using testing::LayoutJob;
using testing::OnMesh;

void ExpectSame(double a, double b, bool exact, const std::string& what) {
  if (exact) {
    EXPECT_EQ(a, b) << what;
  } else {
    EXPECT_NEAR(a, b, 1e-5 * std::fabs(a)) << what;
  }
}

void ExpectOverlapMatchesBlocking(const JobSpec& spec, Communicator* world, int steps = 2) {
  JobSpec blocking = spec, overlapped = spec;
  blocking.mutable_train()->set_overlap_grad_reduce(false);
  overlapped.mutable_train()->set_overlap_grad_reduce(true);
  overlapped.mutable_train()->set_grad_bucket_mb(0.002);  // 524 floats: many edges inside tensors
  auto a = Trainer::Create(blocking, world).value();
  auto b = Trainer::Create(overlapped, world).value();
  const bool exact = world->size() <= 2;
  const std::string where =
      "chips=" + std::to_string(spec.topology().num_chips()) +
      " ep=" + std::to_string(spec.mesh().expert_parallel()) +
      " mp=" + std::to_string(spec.mesh().model_parallel()) +
      " micro=" + std::to_string(spec.train().microbatches()) +
      " bf16=" + std::to_string(spec.train().compute_dtype() == BF16);
  for (int s = 0; s < steps; ++s) {
    const StepResult ra = a->Step(), rb = b->Step();
    ExpectSame(ra.loss, rb.loss, exact, where + " loss, step " + std::to_string(s));
    ExpectSame(ra.grad_norm, rb.grad_norm, exact, where + " grad norm, step " + std::to_string(s));
  }
  const GradReducer& reducer = b->grad_reducer();
  if (!reducer.buckets().empty()) {
    // The backward started buckets before it ended (the embedding's are left for the end).
    EXPECT_GT(reducer.started_early().size(), 0u) << where;
  }
  if (!exact) return;
  for (int64_t i = 0; i < a->layout().total_size(); ++i)
    ASSERT_EQ(a->params()[i], b->params()[i]) << where << " parameter element " << i;
}

TEST(OverlapMpi, EveryDataExpertModelLayoutMatchesBlocking) {
  auto world = MakeWorldCommunicator();
  int layouts = 0;
  for (const testing::MeshLayout& layout : testing::EveryDataExpertModelLayout(world->size())) {
    JobSpec spec = layout.spec;
    if (layouts % 3 == 2) spec.mutable_train()->set_compute_dtype(BF16);
    ExpectOverlapMatchesBlocking(spec, world.get());
    ++layouts;
  }
  EXPECT_GE(layouts, 10);
}

// BF16 on the wire: the gradients lose their low mantissa bits once, so the losses of a short
// run stay close to the FP32 wire's (tiny's 300-step parity is measured in the README).
TEST(OverlapMpi, Bf16WireTrainsLikeFp32Wire) {
  auto world = MakeWorldCommunicator();
  JobSpec fp32 = OnMesh(LayoutJob(8), 8, 4, 2), bf16 = fp32;
  bf16.mutable_train()->set_grad_reduce_dtype(BF16);
  auto a = Trainer::Create(fp32, world.get()).value();
  auto b = Trainer::Create(bf16, world.get()).value();
  double first = 0, last_a = 0, last_b = 0;
  for (int s = 0; s < 8; ++s) {
    const StepResult ra = a->Step(), rb = b->Step();
    if (s == 0) {
      first = ra.loss;
      EXPECT_EQ(ra.loss, rb.loss);  // the first forward precedes any update
    }
    last_a = ra.loss;
    last_b = rb.loss;
  }
  EXPECT_LT(last_a, first);
  EXPECT_NEAR(last_b, last_a, 5e-3 * last_a);
  EXPECT_NE(last_b, last_a) << "the BF16 wire changed nothing: were the gradients sent as bf16?";
}

}  // namespace
}  // namespace openmoe
