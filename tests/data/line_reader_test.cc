#include "data/line_reader.h"

#include "gtest/gtest.h"
#include "tests/data/fixtures.h"

namespace openmoe {
namespace {

using testing::TempDir;
using testing::WriteOrDie;

std::vector<std::string> ReadAll(LineReader* r, absl::Status* status) {
  std::vector<std::string> lines;
  std::string_view line;
  while (true) {
    auto more = r->Next(&line);
    if (!more.ok()) {
      *status = more.status();
      return lines;
    }
    if (!*more) return lines;
    lines.emplace_back(line);
  }
}

TEST(LineReader, PlainAndZstdGiveTheSameLines) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 50000; ++i)
    text += "line " + std::to_string(i) + (i % 7 == 0 ? "\r\n" : "\n");
  text += "last line without newline";
  WriteOrDie(dir / "a.txt", text);
  WriteOrDie(dir / "a.txt.zst", CompressZstd(text));
  for (bool zstd : {false, true}) {
    auto r = LineReader::Open(dir / (zstd ? "a.txt.zst" : "a.txt"), zstd);
    ASSERT_TRUE(r.ok());
    absl::Status status;
    const auto lines = ReadAll(r->get(), &status);
    ASSERT_TRUE(status.ok()) << status;
    ASSERT_EQ(lines.size(), 50001u);
    EXPECT_EQ(lines[7], "line 7");
    EXPECT_EQ(lines[49999], "line 49999");
    EXPECT_EQ(lines.back(), "last line without newline");
    EXPECT_EQ((*r)->line_number(), 50001);
  }
}

TEST(LineReader, ConcatenatedFramesAreOneStream) {
  TempDir dir;
  WriteOrDie(dir / "c.zst", CompressZstd("a\nb\n") + CompressZstd("c\n"));
  auto r = LineReader::Open(dir / "c.zst", true);
  ASSERT_TRUE(r.ok());
  absl::Status status;
  EXPECT_EQ(ReadAll(r->get(), &status), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(status.ok());
}

TEST(LineReader, MissingFileIsNotFound) {
  auto r = LineReader::Open("/nonexistent/dir/x.jsonl", false);
  EXPECT_TRUE(absl::IsNotFound(r.status()));
  EXPECT_NE(r.status().message().find("/nonexistent/dir/x.jsonl"), std::string::npos);
}

TEST(LineReader, TruncatedZstdIsDataLossNamingTheFile) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "some text line " + std::to_string(i * 7919) + "\n";
  const std::string z = CompressZstd(text);
  WriteOrDie(dir / "t.zst", z.substr(0, z.size() * 2 / 3));
  auto r = LineReader::Open(dir / "t.zst", true);
  ASSERT_TRUE(r.ok());
  absl::Status status;
  const auto lines = ReadAll(r->get(), &status);
  EXPECT_TRUE(absl::IsDataLoss(status)) << status;
  EXPECT_NE(status.message().find(dir / "t.zst"), std::string::npos);
  EXPECT_NE(status.message().find("truncated"), std::string::npos) << status;
  EXPECT_LT(lines.size(), 20000u);
}

TEST(LineReader, CorruptAndEmptyZstdAreDataLoss) {
  TempDir dir;
  WriteOrDie(dir / "garbage.zst", "this is not zstd at all\n");
  WriteOrDie(dir / "empty.zst", "");
  for (const char* name : {"garbage.zst", "empty.zst"}) {
    auto r = LineReader::Open(dir / name, true);
    ASSERT_TRUE(r.ok());
    absl::Status status;
    ReadAll(r->get(), &status);
    EXPECT_TRUE(absl::IsDataLoss(status)) << name << ": " << status;
    EXPECT_NE(status.message().find(name), std::string::npos);
  }
}

}  // namespace
}  // namespace openmoe
