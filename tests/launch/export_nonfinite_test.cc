// `openmoe export` (ExportSafetensors) refuses a checkpoint whose parameters hold NaN or inf,
// naming the tensor and the first bad flat index, and leaves no output file behind (nor its
// temporary); --allow_nonfinite (allow_nonfinite) writes it anyway, bit for bit.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "launch/checkpoint/writer.h"
#include "launch/checkpoint/export.h"
#include "launch/checkpoint/safetensors.h"
#include "tests/launch/checkpoint_test_util.h"
#include "tests/launch/bounded_run.h"

namespace openmoe {
namespace {

using testing::ScratchDir;

TEST(ExportNonFinite, RefusesNamingTensorAndIndexAndLeavesNoFile) {
  ScratchDir dir;
  JobSpec spec = testing::CheckpointJob(4, 4, 4);
  std::unique_ptr<Trainer> trainer = testing::MakeTrainer(spec);
  const ParamLayout& layout = trainer->layout();
  // The third parameter tensor, at flat index 5: the error must name exactly these.
  const ParamInfo& bad = layout.params()[2];
  ASSERT_GT(bad.size, 7);
  trainer->params().data()[bad.offset + 5] = std::numeric_limits<float>::quiet_NaN();
  trainer->params().data()[bad.offset + 7] = std::numeric_limits<float>::infinity();
  auto saved = SaveCheckpoint(*trainer, dir.Sub("ckpt"), 1);
  ASSERT_TRUE(saved.ok()) << saved.status();

  const std::string out = dir.Sub("w.safetensors");
  auto refused = ExportSafetensors(saved->path, out);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(refused.status().message());
  EXPECT_TRUE(absl::StrContains(message, absl::StrCat("tensor ", bad.name, " "))) << message;
  EXPECT_TRUE(absl::StrContains(message, "at flat index 5;")) << message;
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out + ".tmp"));

  // The binary: one line, exit 1, no file.
  const testing::RunResult r =
      testing::RunBounded({"export", "--checkpoint", saved->path, "--out", out});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  ASSERT_EQ(r.ErrLines().size(), 1u) << r.Describe();
  EXPECT_TRUE(absl::StartsWith(r.err, "openmoe: ")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, bad.name)) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));

  // Allowed: written, and the values read back are the trainer's (NaN and inf included).
  auto allowed = ExportSafetensors(saved->path, out, /*allow_nonfinite=*/true);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  auto file = SafetensorsFile::Open(out);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsEntry* entry = file->Find(bad.name);
  ASSERT_NE(entry, nullptr);
  std::vector<float> back(static_cast<size_t>(bad.size));
  ASSERT_TRUE(file->ReadF32(*entry, 0, bad.size, back.data()).ok());
  EXPECT_TRUE(std::isnan(back[5]));
  EXPECT_TRUE(std::isinf(back[7]));
  EXPECT_TRUE(testing::SameBits(back.data(), trainer->params().data() + bad.offset, bad.size));
}

}  // namespace
}  // namespace openmoe
