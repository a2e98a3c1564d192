#include "data/document_reader.h"

#include "gtest/gtest.h"
#include "tests/data/fixtures.h"

namespace openmoe {
namespace {

using testing::TempDir;
using testing::WriteOrDie;

std::vector<Document> ReadPass(DocumentReader* r, absl::Status* status = nullptr) {
  std::vector<Document> docs;
  Document d;
  while (true) {
    auto more = r->Next(&d);
    if (!more.ok()) {
      if (status) *status = more.status();
      return docs;
    }
    if (!*more) return docs;
    docs.push_back(d);
  }
}

SourceConfig Config(const std::vector<std::string>& paths, const std::string& field = "text") {
  SourceConfig c;
  c.set_name("src");
  for (const auto& p : paths) c.add_paths(p);
  c.set_text_field(field);
  return c;
}

TEST(DocumentReader, JsonlAndZstdFilesFormOneSourceInOrder) {
  TempDir dir;
  const auto docs = testing::GeneratedDocuments(1, 30);
  WriteOrDie(dir / "a.jsonl", testing::JsonlOf({docs.begin(), docs.begin() + 10}));
  WriteOrDie(dir / "b.jsonl.zst", CompressZstd(testing::JsonlOf({docs.begin() + 10, docs.end()})));
  auto src = ResolveSource(Config({dir / "a.jsonl", dir / "b.jsonl.zst"}), 0);
  ASSERT_TRUE(src.ok()) << src.status();
  auto r = DocumentReader::Open(*src, 0, 1, false);
  ASSERT_TRUE(r.ok());
  const auto got = ReadPass(r->get());
  ASSERT_EQ(got.size(), 30u);
  for (int i = 0; i < 30; ++i) {
    EXPECT_EQ(got[i].text, docs[i]);
    EXPECT_EQ(got[i].record, i);
  }
  EXPECT_EQ(got[12].where, dir / "b.jsonl.zst" + ":3");
}

TEST(DocumentReader, ShardsAreDisjointAndCoverTheSource) {
  TempDir dir;
  const auto docs = testing::GeneratedDocuments(2, 23);
  WriteOrDie(dir / "a.jsonl", testing::JsonlOf(docs));
  auto src = ResolveSource(Config({dir / "a.jsonl"}), 0);
  ASSERT_TRUE(src.ok());
  std::vector<int> seen(23, 0);
  for (int k = 0; k < 4; ++k) {
    auto r = DocumentReader::Open(*src, k, 4, false);
    ASSERT_TRUE(r.ok());
    for (const Document& d : ReadPass(r->get())) {
      EXPECT_EQ(d.record % 4, k);
      EXPECT_EQ(d.text, docs[d.record]);
      ++seen[d.record];
    }
  }
  for (int c : seen) EXPECT_EQ(c, 1);
}

TEST(DocumentReader, RestartSkipsToARecord) {
  TempDir dir;
  const auto docs = testing::GeneratedDocuments(3, 12);
  WriteOrDie(dir / "a.jsonl.zst", CompressZstd(testing::JsonlOf(docs)));
  auto src = ResolveSource(Config({dir / "a.jsonl.zst"}), 0);
  auto r = DocumentReader::Open(*src, 1, 2, false);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->Restart(6).ok());
  const auto got = ReadPass(r->get());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].record, 7);
}

TEST(DocumentReader, StackStyleContentAndLangFields) {
  TempDir dir;
  WriteOrDie(dir / "code.jsonl",
             "{\"content\": \"int main() {}\\n\", \"lang\": \"c\"}\n\n"
             "{\"content\": \"print(1)\\n\", \"lang\": \"python\"}\n");
  SourceConfig c = Config({dir / "code.jsonl"}, "content");
  c.set_lang_field("lang");
  auto r = DocumentReader::Open(*ResolveSource(c, 0), 0, 1, false);
  ASSERT_TRUE(r.ok());
  const auto got = ReadPass(r->get());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].lang, "c");
  EXPECT_EQ(got[1].text, "print(1)\n");
  EXPECT_EQ(got[1].record, 2);  // the blank line is record 1 (skipped and counted)
  CounterList counters;
  (*r)->AddCounters("", &counters);
  EXPECT_EQ(counters[1], (std::pair<std::string, int64_t>{"blank_lines", 1}));
}

TEST(DocumentReader, TextTreeReadsFilesInPathOrderWithLanguages) {
  TempDir dir;
  ASSERT_TRUE(MakeDirectories(dir / "pkg/sub").ok());
  WriteOrDie(dir / "pkg/b.py", "print('b')\n");
  WriteOrDie(dir / "pkg/a.go", "package a\n");
  WriteOrDie(dir / "pkg/sub/c.h", "int c;\n");
  WriteOrDie(dir / "pkg/blob.bin", std::string("\x00\x01\x02", 3));
  WriteOrDie(dir / "pkg/big.txt", std::string(5000, 'x'));
  SourceConfig c = Config({dir / "pkg"});
  c.set_max_file_bytes(4096);
  auto src = ResolveSource(c, 0);
  ASSERT_TRUE(src.ok());
  EXPECT_EQ(src->format, FORMAT_TEXT_TREE);
  auto r = DocumentReader::Open(*src, 0, 1, false);
  const auto got = ReadPass(r->get());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].lang, "go");
  EXPECT_EQ(got[1].lang, "python");
  EXPECT_EQ(got[2].lang, "c");
  EXPECT_EQ(got[2].text, "int c;\n");
  CounterList counters;
  (*r)->AddCounters("", &counters);
  EXPECT_EQ(counters[2].second, 2);  // blob.bin (binary) and big.txt (too large)

  c.add_extensions(".py");
  auto only_py = DocumentReader::Open(*ResolveSource(c, 0), 0, 1, false);
  EXPECT_EQ(ReadPass(only_py->get()).size(), 1u);
}

TEST(DocumentReader, DirectoryOfJsonlFiles) {
  TempDir dir;
  ASSERT_TRUE(MakeDirectories(dir / "rp").ok());
  WriteOrDie(dir / "rp/2.jsonl.zst", CompressZstd(testing::JsonlOf({"second"})));
  WriteOrDie(dir / "rp/1.jsonl", testing::JsonlOf({"first"}));
  WriteOrDie(dir / "rp/README", "not data");
  SourceConfig c = Config({dir / "rp"});
  c.set_format(FORMAT_JSONL_ZST);
  auto src = ResolveSource(c, 0);
  ASSERT_TRUE(src.ok()) << src.status();
  auto r = DocumentReader::Open(*src, 0, 1, false);
  const auto got = ReadPass(r->get());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].text, "first");
  EXPECT_EQ(got[1].text, "second");
}

TEST(DocumentReader, MalformedLineStopsWithFileAndLine) {
  TempDir dir;
  WriteOrDie(dir / "bad.jsonl",
             "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"text\": \"broken}\n{\"text\": \"ok\"}\n");
  auto r = DocumentReader::Open(*ResolveSource(Config({dir / "bad.jsonl"}), 0), 0, 1, false);
  absl::Status status;
  const auto got = ReadPass(r->get(), &status);
  EXPECT_EQ(got.size(), 2u);
  EXPECT_TRUE(absl::IsInvalidArgument(status));
  EXPECT_EQ(status.message().substr(0, (dir / "bad.jsonl:3: malformed JSON").size()),
            dir / "bad.jsonl:3: malformed JSON")
      << status;
}

TEST(DocumentReader, SkipBadRecordsCountsThem) {
  TempDir dir;
  WriteOrDie(dir / "bad.jsonl",
             "{\"text\": \"a\"}\nnot json\n{\"other\": \"x\"}\n{\"text\": 5}\n{\"text\": \"b\"}\n");
  auto r = DocumentReader::Open(*ResolveSource(Config({dir / "bad.jsonl"}), 0), 0, 1, true);
  absl::Status status;
  const auto got = ReadPass(r->get(), &status);
  EXPECT_TRUE(status.ok());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].text, "b");
  CounterList counters;
  (*r)->AddCounters("", &counters);
  EXPECT_EQ(counters[0], (std::pair<std::string, int64_t>{"bad_records", 3}));
}

TEST(DocumentReader, MissingPathsAndEmptyDirectoriesAreErrors) {
  TempDir dir;
  auto missing = ResolveSource(Config({dir / "nope.jsonl"}), 2);
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_NE(missing.status().message().find("data.sources[2] (src)"), std::string::npos);
  EXPECT_NE(missing.status().message().find(dir / "nope.jsonl"), std::string::npos);
  ASSERT_TRUE(MakeDirectories(dir / "empty").ok());
  auto empty = ResolveSource(Config({dir / "empty"}), 0);
  EXPECT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("empty source"), std::string::npos) << empty.status();
}

}  // namespace
}  // namespace openmoe
