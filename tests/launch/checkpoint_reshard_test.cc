// Resharding: a checkpoint written on one mesh loads on another (chips, expert parallelism), by
// global names and expert ids, optimizer state included. The steps after loading match the
// uninterrupted run on the writing mesh to 1e-5 relative (layouts differ only in float rounding).
#include <cmath>

#include "gtest/gtest.h"
#include "launch/checkpoint/index.h"
#include "launch/checkpoint/reader.h"
#include "launch/checkpoint/restore.h"
#include "launch/checkpoint/writer.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

using testing::CheckpointJob;
using testing::MakeTrainer;
using testing::ScratchDir;

constexpr int kStepsBeforeSave = 3;
constexpr int kStepsAfter = 2;

// Saves `from` after a few steps; loads into each of `to`; compares the next steps' losses with
// `from` continuing, and the parameters and optimizer state right after loading with the saved
// ones (exactly: loading copies bits).
void ExpectReshards(const JobSpec& from, const std::vector<JobSpec>& to) {
  ScratchDir dir;
  auto writer = MakeTrainer(from);
  for (int i = 0; i < kStepsBeforeSave; ++i) writer->Step();
  auto saved = SaveCheckpoint(*writer, dir.path(), 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  // The full model as saved, one process: the reference for every loaded piece.
  auto reader = CheckpointReader::Open(saved->path);
  ASSERT_TRUE(reader.ok());
  std::vector<double> want;
  for (int i = 0; i < kStepsAfter; ++i) want.push_back(writer->Step().loss);

  for (const JobSpec& spec : to) {
    const std::string where = "chips=" + std::to_string(spec.topology().num_chips()) +
                              " ep=" + std::to_string(spec.mesh().expert_parallel());
    auto loaded = MakeTrainer(spec);
    auto outcome = RestoreCheckpoint(*loaded, saved->path);
    ASSERT_TRUE(outcome.ok()) << where << ": " << outcome.status();
    EXPECT_EQ(loaded->step(), kStepsBeforeSave);
    const bool same_chips = spec.topology().num_chips() == from.topology().num_chips();
    EXPECT_EQ(outcome->warnings.empty(), same_chips) << where;
    if (!same_chips) {
      EXPECT_NE(outcome->warnings[0].find("data-iterator states are not restored"),
                std::string::npos);
    }

    // Every piece (parameter and Adafactor state) equals the checkpoint's, read independently.
    for (const LocalTensor& t : LocalTensors(loaded->layout(), &loaded->optimizer())) {
      std::vector<float> expect(static_cast<size_t>(t.size()));
      ASSERT_TRUE(reader->Read(t, expect.data()).ok());
      const float* got =
          (t.kind == TENSOR_PARAM ? loaded->params().data() : loaded->optimizer().state().data()) +
          t.offset;
      EXPECT_TRUE(testing::SameBits(got, expect.data(), t.size()))
          << where << " " << TensorKindName(t.kind) << " " << t.name;
    }
    for (int i = 0; i < kStepsAfter; ++i) {
      const double got = loaded->Step().loss;
      EXPECT_NEAR(got, want[i], 1e-5 * std::fabs(want[i]))
          << where << " step " << kStepsBeforeSave + i;
    }
  }
}

TEST(CheckpointReshard, EightChipsEp8ToOneChipSixteenChipsAndOthers) {
  ExpectReshards(CheckpointJob(16, 8, 8),
                 {CheckpointJob(16, 1, 1), CheckpointJob(16, 16, 16), CheckpointJob(16, 64, 8),
                  CheckpointJob(16, 8, 2), CheckpointJob(16, 8, 8)});
}

TEST(CheckpointReshard, OneChipToExpertParallel) {
  ExpectReshards(CheckpointJob(8, 1, 1), {CheckpointJob(8, 8, 8), CheckpointJob(8, 4, 2)});
}

// Written as 2 experts per chip (ep 4 of 8 experts), read as 4 per chip (ep 2) and 1 (ep 8). (One
// process writes one file per expert tensor; the MPI suite writes several and reads across them.)
TEST(CheckpointReshard, FourChipsToOtherExpertParallelSizes) {
  ExpectReshards(CheckpointJob(8, 4, 4), {CheckpointJob(8, 4, 2), CheckpointJob(8, 16, 8)});
}

}  // namespace
}  // namespace openmoe
