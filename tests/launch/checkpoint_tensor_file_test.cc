// Tensor files: round trips and detection of every kind of damage (XXH64 itself:
// tests/core/io/checksum_test.cc).
#include "launch/checkpoint/tensor_file.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

#include "gtest/gtest.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

using testing::ReadBytes;
using testing::ScratchDir;
using testing::WriteBytes;

std::vector<float> Ramp(int64_t n) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = 0.001f * static_cast<float>(i % 977) - 0.3f;
  return v;
}

TensorEntry EntryFor(const TensorFileInfo& info, const std::string& file) {
  TensorEntry e;
  e.set_file(file);
  e.set_encoding(info.encoding);
  e.set_raw_bytes(info.raw_bytes);
  e.set_compressed_bytes(info.compressed_bytes);
  e.set_checksum(info.checksum);
  e.set_file_checksum(info.file_checksum);
  return e;
}

TEST(TensorFile, RoundTripsBothEncodingsBitExactly) {
  ScratchDir dir;
  const std::vector<float> values = Ramp(10007);
  for (TensorEncoding enc : {ENCODING_ZSTD, ENCODING_SHUFFLE4_ZSTD}) {
    const std::string path = dir.Sub("t.zst");
    auto info = WriteTensorFile(path, values.data(), static_cast<int64_t>(values.size()), enc);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->raw_bytes, 4 * static_cast<int64_t>(values.size()));
    EXPECT_EQ(info->compressed_bytes, static_cast<int64_t>(std::filesystem::file_size(path)));
    EXPECT_EQ(info->checksum, Xxh64(values.data(), 4 * values.size()));
    std::vector<float> back(values.size(), -1.0f);
    ASSERT_TRUE(ReadTensorFile(path, EntryFor(*info, "t.zst"), back.data()).ok());
    EXPECT_EQ(std::memcmp(back.data(), values.data(), 4 * values.size()), 0);
  }
}

// Several shuffle blocks and a short last one; every float distinct so that a misplaced byte shows.
TEST(TensorFile, ManyBlocksRoundTrip) {
  ScratchDir dir;
  const int64_t n = 2 * kShuffleBlockFloats + 12345;
  std::vector<float> values(n);
  for (int64_t i = 0; i < n; ++i) values[i] = static_cast<float>(i) * 1.0001f - 7.0f;
  auto info = WriteTensorFile(dir.Sub("big.zst"), values.data(), n);
  ASSERT_TRUE(info.ok()) << info.status();
  std::vector<float> back(n);
  ASSERT_TRUE(ReadTensorFile(dir.Sub("big.zst"), EntryFor(*info, "big.zst"), back.data()).ok());
  EXPECT_EQ(std::memcmp(back.data(), values.data(), 4 * n), 0);
  // A manifest that claims fewer or more floats than the file holds.
  TensorEntry shorter = EntryFor(*info, "big.zst");
  shorter.set_raw_bytes(info->raw_bytes - 4);
  EXPECT_EQ(ReadTensorFile(dir.Sub("big.zst"), shorter, back.data()).code(),
            absl::StatusCode::kDataLoss);
  TensorEntry longer = EntryFor(*info, "big.zst");
  longer.set_raw_bytes(info->raw_bytes + 4);
  back.resize(n + 1);
  EXPECT_EQ(ReadTensorFile(dir.Sub("big.zst"), longer, back.data()).code(),
            absl::StatusCode::kDataLoss);
}

TEST(TensorFile, EmptyTensorRoundTrips) {
  ScratchDir dir;
  auto info = WriteTensorFile(dir.Sub("e.zst"), nullptr, 0);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(ReadTensorFile(dir.Sub("e.zst"), EntryFor(*info, "e.zst"), nullptr).ok());
}

class TensorFileDamage : public ::testing::Test {
 protected:
  void SetUp() override {
    values_ = Ramp(4096);
    auto info = WriteTensorFile(path(), values_.data(), 4096);
    ASSERT_TRUE(info.ok());
    entry_ = EntryFor(*info, "t.zst");
    out_.resize(4096);
  }
  std::string path() const { return dir_.Sub("t.zst"); }
  absl::Status Read() { return ReadTensorFile(path(), entry_, out_.data()); }

  ScratchDir dir_;
  std::vector<float> values_, out_;
  TensorEntry entry_;
};

TEST_F(TensorFileDamage, EveryFlippedByteIsDetected) {
  const std::string good = ReadBytes(path());
  // Every position of the file, one at a time (header, blocks, end).
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    WriteBytes(path(), bad);
    const absl::Status s = Read();
    ASSERT_FALSE(s.ok()) << "flipped byte " << i << " went unnoticed";
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_NE(s.message().find(path()), std::string::npos) << s;
  }
}

TEST_F(TensorFileDamage, TruncationIsNamed) {
  WriteBytes(path(), ReadBytes(path()).substr(0, 100));
  const absl::Status s = Read();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s;
}

TEST_F(TensorFileDamage, WrongChecksumsInManifestAreNamed) {
  entry_.set_checksum(entry_.checksum() ^ 1);
  absl::Status s = Read();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find(": checksum mismatch"), std::string::npos) << s;
  entry_.set_file_checksum(entry_.file_checksum() ^ 1);
  s = Read();
  EXPECT_NE(s.message().find("file checksum mismatch"), std::string::npos) << s;
}

// The raw checksum stands behind the file checksum: a file whose bytes decompress to other data
// (here: a different, valid frame with a matching file checksum) is still caught.
TEST_F(TensorFileDamage, ValidFrameOfOtherDataIsCaught) {
  std::vector<float> other = values_;
  other[17] += 1.0f;
  auto info = WriteTensorFile(path(), other.data(), 4096);
  ASSERT_TRUE(info.ok());
  entry_.set_file_checksum(info->file_checksum);
  entry_.set_compressed_bytes(info->compressed_bytes);
  const absl::Status s = Read();
  EXPECT_NE(s.message().find(": checksum mismatch"), std::string::npos) << s;
}

TEST_F(TensorFileDamage, MissingFileIsNotFound) {
  std::filesystem::remove(path());
  EXPECT_EQ(Read().code(), absl::StatusCode::kNotFound);
}

TEST(TensorFile, InjectedWriteFailureLeavesPartialFileAndNamesIt) {
  ScratchDir dir;
  SetWriteFaultHookForTesting(
      [](const std::string&) { return absl::ResourceExhaustedError("disk full (injected)"); });
  const std::vector<float> values = Ramp(1000);
  auto info = WriteTensorFile(dir.Sub("t.zst"), values.data(), 1000);
  SetWriteFaultHookForTesting(nullptr);
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(info.status().message().find(dir.Sub("t.zst")), std::string::npos) << info.status();
}

TEST(TensorFile, UnwritablePathIsNamed) {
  ScratchDir dir;
  WriteBytes(dir.Sub("file"), "x");
  const float v = 1.0f;
  auto info = WriteTensorFile(dir.Sub("file/t.zst"), &v, 1);
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.status().message().find("file/t.zst"), std::string::npos) << info.status();
}

}  // namespace
}  // namespace openmoe
