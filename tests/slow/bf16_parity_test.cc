// BF16 parity: launch/configs/tiny.pbtxt (the generated Markov task) trained for 300 steps in BF16
// ends within 2% of the FP32 run's loss, both runs seeing the same batches from the same initial
// parameters. Compared: the last step's loss (the criterion) and, less noisy, the mean of
// the last 20 steps. ~20 s per run on one core, hence the CTest label "slow".
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "launch/trainer.h"

namespace openmoe {
namespace {

constexpr int kSteps = 300, kTail = 20;

std::vector<double> Losses(const char* dtype) {
  const std::string job = std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt";
  absl::StatusOr<JobSpec> spec =
      LoadJob({job}, {std::string("train.compute_dtype=") + dtype,
                      "train.steps=" + std::to_string(kSteps)});
  EXPECT_TRUE(spec.ok()) << spec.status();
  auto trainer = Trainer::Create(*spec).value();
  std::vector<double> losses;
  for (int s = 0; s < kSteps; ++s) {
    const StepResult r = trainer->Step();
    EXPECT_FALSE(r.skipped) << dtype << " step " << s + 1;
    losses.push_back(r.loss);
  }
  return losses;
}

double TailMean(const std::vector<double>& v) {
  double sum = 0;
  for (size_t i = v.size() - kTail; i < v.size(); ++i) sum += v[i];
  return sum / kTail;
}

TEST(Bf16Parity, TinyMarkov300StepsWithinTwoPercentOfFp32) {
  const std::vector<double> fp32 = Losses("FP32");
  const std::vector<double> bf16 = Losses("BF16");
  // Both learn (the first loss is ~log(512) = 6.2) ...
  EXPECT_LT(fp32.back(), 0.5 * fp32.front());
  // ... from the same start (the first loss differs only by bf16 rounding), on different numerics.
  EXPECT_NEAR(bf16.front(), fp32.front(), 1e-2 * fp32.front());
  EXPECT_NE(bf16.back(), fp32.back());
  EXPECT_NEAR(bf16.back(), fp32.back(), 0.02 * fp32.back());
  EXPECT_NEAR(TailMean(bf16), TailMean(fp32), 0.02 * TailMean(fp32));
  std::printf("tiny, %d steps: final loss FP32 %.4f BF16 %.4f; mean of the last %d FP32 %.4f "
              "BF16 %.4f\n",
              kSteps, fp32.back(), bf16.back(), kTail, TailMean(fp32), TailMean(bf16));
}

}  // namespace
}  // namespace openmoe
