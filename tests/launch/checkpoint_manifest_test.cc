// The manifest file and directory naming: checksummed text, strict names, model compatibility
// naming the field, and the tensor index's own consistency checks.
#include "launch/checkpoint/manifest.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

using testing::ScratchDir;

TEST(StepDirName, RoundTripsAndRejectsOtherNames) {
  EXPECT_EQ(StepDirName(42), "step_00000042");
  EXPECT_EQ(StepDirName(123456789), "step_123456789");
  EXPECT_EQ(ParseStepDirName("step_00000042"), 42);
  EXPECT_EQ(ParseStepDirName("step_123456789"), 123456789);
  for (const char* bad :
       {"step_42", "step_00000042.tmp", "step_0000004x", "steps_00000042", "step_", ""}) {
    EXPECT_FALSE(ParseStepDirName(bad).has_value()) << bad;
  }
}

TEST(ListCheckpoints, NewestFirstIgnoringTemporaryAndOtherEntries) {
  ScratchDir dir;
  for (const char* d :
       {"step_00000002", "step_00000010", "step_00000005", "step_00000011.tmp", "notes"}) {
    std::filesystem::create_directory(dir.Sub(d));
  }
  testing::WriteBytes(dir.Sub("step_00000020"), "a file, not a directory");
  auto list = ListCheckpoints(dir.path());
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].step, 10);
  EXPECT_EQ((*list)[1].step, 5);
  EXPECT_EQ((*list)[2].step, 2);
  EXPECT_TRUE(ListCheckpoints(dir.Sub("absent"))->empty());
}

CheckpointManifest SmallManifest() {
  CheckpointManifest m;
  m.set_step(7);
  *m.mutable_job() = testing::LayoutJob(4);
  TensorEntry* t = m.add_tensors();
  t->set_name("embedding");
  t->add_shape(64);
  t->add_shape(16);
  t->set_file("param.embedding.zst");
  t->set_raw_bytes(64 * 16 * 4);
  t->set_checksum(0x0123456789abcdefull);
  return m;
}

TEST(Manifest, RoundTripsThroughText) {
  const CheckpointManifest m = SmallManifest();
  const std::string text = SerializeManifest(m);
  EXPECT_NE(text.find("# xxh64 "), std::string::npos);
  auto back = ParseManifest(text, "m");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->SerializeAsString(), m.SerializeAsString());
}

TEST(Manifest, EditedOrTruncatedTextIsDataLoss) {
  const std::string text = SerializeManifest(SmallManifest());
  std::string edited = text;
  edited.replace(edited.find("step: 7"), 7, "step: 8");
  EXPECT_EQ(ParseManifest(edited, "m").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseManifest(text.substr(0, text.size() / 2), "m").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ParseManifest("", "m").status().code(), absl::StatusCode::kDataLoss);
}

TEST(Manifest, MissingFileIsNotFoundAndSaysIncomplete) {
  ScratchDir dir;
  auto m = ReadManifest(dir.path());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("incomplete"), std::string::npos) << m.status();
}

TEST(Manifest, OtherFormatVersionIsRefused) {
  CheckpointManifest m = SmallManifest();
  m.set_format_version(99);
  auto back = ParseManifest(SerializeManifest(m), "m");
  EXPECT_NE(back.status().message().find("format_version=99"), std::string::npos) << back.status();
}

TEST(CheckModelCompatible, NamesTheFirstDifferingField) {
  const JobSpec a = testing::LayoutJob(4);
  EXPECT_TRUE(CheckModelCompatible(a, a).ok());
  // Topology, mesh, optimizer and routing capacity may differ.
  JobSpec other_layout = testing::OnMesh(a, 8, 4, 4);
  other_layout.mutable_router()->set_capacity_factor(2.0);
  other_layout.mutable_optimizer()->set_decay_exponent(0.5);
  EXPECT_TRUE(CheckModelCompatible(a, other_layout).ok());

  JobSpec b = a;
  b.mutable_model()->set_d_model(32);
  absl::Status s = CheckModelCompatible(a, b);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("model.d_model=16 in the checkpoint, 32 in this job"),
            std::string::npos)
      << s;

  b = a;
  b.mutable_model()->set_num_experts(8);
  EXPECT_NE(CheckModelCompatible(a, b).message().find("model.num_experts"), std::string::npos);
  b = a;
  b.mutable_model()->set_vocab_size(1000);
  EXPECT_NE(CheckModelCompatible(a, b).message().find("model.vocab_size"), std::string::npos);
  b = a;
  b.mutable_model()->set_num_shared_experts(1);
  EXPECT_NE(
      CheckModelCompatible(a, b).message().find("model.num_shared_experts=0 in the checkpoint"),
      std::string::npos);
}

TEST(CheckTensorIndex, ExpertRangesMustCoverEveryExpertOnce) {
  CheckpointManifest m;
  auto add = [&](int64_t begin, int64_t end) {
    TensorEntry* t = m.add_tensors();
    t->set_name("layers.1.moe.experts.wo");
    t->set_is_expert(true);
    for (int64_t d : {4, 2, 3}) t->add_shape(d);
    t->set_expert_begin(begin);
    t->set_expert_end(end);
    t->set_file("param.x." + std::to_string(begin) + ".zst");
    t->set_raw_bytes((end - begin) * 6 * 4);
  };
  add(0, 2);
  add(2, 4);
  EXPECT_TRUE(CheckTensorIndex(m).ok());
  add(3, 4);  // expert 3 twice
  EXPECT_NE(CheckTensorIndex(m).message().find("expert 3 is held by 2 files"), std::string::npos);
  m.clear_tensors();
  add(0, 2);  // experts 2, 3 missing
  EXPECT_NE(CheckTensorIndex(m).message().find("expert 2 is held by 0 files"), std::string::npos);
  m.clear_tensors();
  add(0, 5);
  EXPECT_NE(CheckTensorIndex(m).message().find("outside [0, 4)"), std::string::npos);
  m.clear_tensors();
  add(0, 4);
  m.mutable_tensors(0)->set_raw_bytes(12);
  EXPECT_NE(CheckTensorIndex(m).message().find("raw_bytes=12"), std::string::npos);
  m.mutable_tensors(0)->set_raw_bytes(96);
  m.mutable_tensors(0)->set_file("../escape.zst");
  EXPECT_NE(CheckTensorIndex(m).message().find("bad file name"), std::string::npos);
}

}  // namespace
}  // namespace openmoe
