// core/io/file.h: ReadFile's errors (the text job files and the data pipeline rely on), and the
// durable writes, checked by reading the files back through the C library.
#include "core/io/file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace openmoe {
namespace {

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "openmoe_io_XXXXXX").string();
    dir_ = mkdtemp(pattern.data());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  // The file's bytes through stdio, not through the code under test.
  std::string Slurp(const std::string& path) {
    std::string out;
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return "<missing>";
    for (int c; (c = std::fgetc(f)) != EOF;) out.push_back(static_cast<char>(c));
    std::fclose(f);
    return out;
  }
  std::string dir_;
};

TEST_F(FileTest, ReadFileMissingIsNotFoundWithTheReason) {
  const std::string path = JoinPath(dir_, "absent");
  auto text = ReadFile(path);
  ASSERT_FALSE(text.ok());
  EXPECT_TRUE(absl::IsNotFound(text.status()));
  EXPECT_EQ(text.status().message(), path + ": cannot open: No such file or directory");
}

TEST_F(FileTest, WritesAreReadBackWholeAndLeaveNoTemporary) {
  std::string bytes;
  for (int i = 0; i < 200000; ++i) bytes.push_back(static_cast<char>(i * 31 % 256));
  const std::string atomic = JoinPath(dir_, "a.bin"), synced = JoinPath(dir_, "s.bin");
  ASSERT_TRUE(WriteFileAtomically(atomic, "old").ok());
  ASSERT_TRUE(WriteFileAtomically(atomic, bytes).ok());
  ASSERT_TRUE(WriteFileSynced(synced, bytes).ok());
  EXPECT_EQ(Slurp(atomic), bytes);
  EXPECT_EQ(Slurp(synced), bytes);
  auto back = ReadFile(atomic);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, bytes);
  EXPECT_TRUE(SyncFile(synced).ok());
  EXPECT_TRUE(FsyncDirectory(dir_).ok());
  auto files = ListFilesRecursive(dir_);
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(files->size(), 2u);  // no a.bin.tmp<pid> left behind
}

TEST_F(FileTest, FailuresNameThePathAndMapErrno) {
  const std::string missing_dir = JoinPath(dir_, "no/such/dir/f");
  const absl::Status w = WriteFileAtomically(missing_dir, "x");
  EXPECT_TRUE(absl::IsNotFound(w)) << w;
  EXPECT_NE(w.message().find(missing_dir), std::string::npos) << w;
  EXPECT_TRUE(absl::IsNotFound(SyncFile(missing_dir)));
  EXPECT_TRUE(absl::IsNotFound(FsyncDirectory(JoinPath(dir_, "nodir"))));
  EXPECT_TRUE(absl::IsResourceExhausted(ErrnoStatus(ENOSPC, "f")));
  EXPECT_TRUE(absl::IsPermissionDenied(ErrnoStatus(EACCES, "f")));
  EXPECT_EQ(ErrnoStatus(EIO, "f: write failed").message(), "f: write failed (Input/output error)");
}

}  // namespace
}  // namespace openmoe
