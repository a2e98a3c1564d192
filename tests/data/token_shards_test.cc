#include "data/token_shards.h"

#include "absl/strings/str_split.h"
#include "core/io/checksum.h"
#include "core/io/file.h"
#include "data/document_stream.h"
#include "data/prep.h"
#include "gtest/gtest.h"
#include "tests/data/fixtures.h"

namespace openmoe {
namespace {

using testing::TempDir;
using testing::WriteOrDie;

TEST(TokenShards, WriteReadRoundTrip) {
  TempDir dir;
  TokenShardWriter w(dir.path(), 10, 500, 400, 77);
  std::vector<std::vector<int32_t>> docs = {
      {1, 2, 3}, {}, {4, 5, 6, 7, 8, 9, 10, 11}, {12}, {13, 14}};
  for (const auto& d : docs) ASSERT_TRUE(w.Add(d).ok());
  auto written = w.Finish();
  ASSERT_TRUE(written.ok());
  auto index = ReadShardIndex(dir.path());
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->documents, 5);
  EXPECT_EQ(index->tokens, 14);
  EXPECT_EQ(index->vocab_size, 500);
  EXPECT_EQ(index->tokenizer_checksum, 77u);
  ASSERT_EQ(index->shards.size(), 2u);  // the first reaches 11 >= 10 tokens after document 2
  std::vector<std::vector<int32_t>> got;
  for (size_t i = 0; i < index->shards.size(); ++i) {
    auto shard = LoadTokenShard(*index, static_cast<int64_t>(i));
    ASSERT_TRUE(shard.ok()) << shard.status();
    for (size_t j = 0; j + 1 < shard->offsets.size(); ++j)
      got.emplace_back(shard->tokens.begin() + shard->offsets[j],
                       shard->tokens.begin() + shard->offsets[j + 1]);
  }
  EXPECT_EQ(got, docs);
}

// The index says format 2 and records XXH64 of each shard file's bytes (Xxh64 itself is checked
// against the published values in tests/core/io/checksum_test.cc).
TEST(TokenShards, IndexIsFormat2WithXxh64OfEachFile) {
  TempDir dir;
  TokenShardWriter w(dir.path(), 4, 500, 400, 77);
  for (const std::vector<int32_t>& d : {std::vector<int32_t>{1, 2, 3, 4}, {5, 6, 7, 8}, {9}})
    ASSERT_TRUE(w.Add(d).ok());
  ASSERT_TRUE(w.Finish().ok());
  auto text = ReadFile(JoinPath(dir.path(), "index.txt"));
  ASSERT_TRUE(text.ok()) << text.status();
  std::vector<std::string> lines = absl::StrSplit(*text, '\n', absl::SkipEmpty());
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines[0], "openmoe-token-shards 2");
  int shards = 0;
  for (const std::string& line : lines) {
    std::vector<std::string> w = absl::StrSplit(line, ' ');
    if (w[0] != "shard") continue;
    ++shards;
    ASSERT_EQ(w.size(), 10u) << line;
    auto bytes = ReadFile(JoinPath(dir.path(), w[1]));
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(w[9], ChecksumHex(Xxh64(bytes->data(), bytes->size()))) << line;
  }
  EXPECT_EQ(shards, 3);
}

// A directory from an older prep (format 1, FNV-1a checksums, or no version at all) is refused in
// one line that says what to do, rather than failing later on every shard's checksum.
TEST(TokenShards, OldFormatIndexSaysRerunPrep) {
  TempDir dir;
  TokenShardWriter w(dir.path(), 4, 500, 400, 77);
  ASSERT_TRUE(w.Add({1, 2, 3}).ok());
  ASSERT_TRUE(w.Finish().ok());
  const std::string path = JoinPath(dir.path(), "index.txt");
  auto text = ReadFile(path);
  ASSERT_TRUE(text.ok());
  const std::string body = text->substr(text->find('\n'));
  for (const std::string header : {"openmoe-token-shards 1", "openmoe-token-shards"}) {
    WriteOrDie(path, header + body);
    auto index = ReadShardIndex(dir.path());
    ASSERT_FALSE(index.ok()) << header;
    const std::string message(index.status().message());
    EXPECT_TRUE(absl::IsDataLoss(index.status())) << message;
    EXPECT_NE(message.find(path + ":1: "), std::string::npos) << message;
    EXPECT_NE(message.find("FNV"), std::string::npos) << message;
    EXPECT_NE(message.find("re-run `openmoe prep`"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
  WriteOrDie(path, "openmoe-token-shards 2" + body);
  EXPECT_TRUE(ReadShardIndex(dir.path()).ok());
}

TEST(TokenShards, PrepIsTheTokenizerOnEveryDocumentAndDeterministic) {
  TempDir dir;
  const auto docs = testing::GeneratedDocuments(8, 60);
  WriteOrDie(dir / "in.jsonl.zst", CompressZstd(testing::JsonlOf(docs)));
  auto run = [&](const std::string& out, int64_t threads) {
    PrepOptions o;
    SourceConfig input;
    input.add_paths(dir / "in.jsonl.zst");
    o.inputs.push_back(input);
    o.tokenizer_model = testing::TinyTokenizerPath();
    o.out_dir = dir / out;
    o.shard_tokens = 700;
    o.threads = threads;
    auto r = RunPrep(o, nullptr);
    EXPECT_TRUE(r.ok()) << r.status();
  };
  run("one", 1);
  run("three", 3);
  auto a = ReadFile(dir / "one/index.txt");
  auto b = ReadFile(dir / "three/index.txt");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b) << "same shards and checksums for any thread count";

  auto tok = Tokenizer::Load(testing::TinyTokenizerPath(), 100);
  ResolvedSource src;
  src.name = "shards";
  src.format = FORMAT_TOKEN_SHARDS;
  src.files = {dir / "three"};
  auto stream = OpenDocumentStream(src, *tok, 0, 1, false);
  ASSERT_TRUE(stream.ok()) << stream.status();
  for (int epoch = 0; epoch < 2; ++epoch) {
    for (size_t i = 0; i < docs.size(); ++i) {
      std::vector<int32_t> got, expect;
      StreamPosition at;
      ASSERT_TRUE((*stream)->Next(&got, &at).ok());
      ASSERT_TRUE((*tok)->Encode(docs[i], &expect).ok());
      EXPECT_EQ(got, expect);
      EXPECT_EQ(at.record, static_cast<int64_t>(i));
      EXPECT_EQ(at.epoch, epoch);
      EXPECT_EQ(*(*tok)->Decode(got), docs[i]) << "text -> shards -> tokens -> text";
    }
  }
}

TEST(TokenShards, TrainTokenizerThenPrepFromTheCommandLineOptions) {
  TempDir dir;
  WriteOrDie(dir / "text.jsonl", testing::JsonlOf(testing::GeneratedDocuments(9, 80)));
  ASSERT_TRUE(MakeDirectories(dir / "code").ok());
  WriteOrDie(dir / "code/a.py", "def a():\n    return 1\n");
  PrepOptions o;
  SourceConfig text, code;
  text.add_paths(dir / "text.jsonl");
  code.add_paths(dir / "code");
  o.inputs = {text, code};
  o.train_tokenizer = dir / "t.model";
  o.training.vocab_size = 350;
  o.training.threads = 1;
  o.out_dir = dir / "out";
  auto r = RunPrep(o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->documents, 81);
  auto tok = Tokenizer::Load(dir / "t.model", 100);
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ((*tok)->pieces(), 350);
  auto index = ReadShardIndex(dir / "out");
  ASSERT_TRUE(index.ok());
  EXPECT_EQ(index->tokenizer_checksum, (*tok)->model_checksum());
  EXPECT_EQ(index->vocab_size, 450);
}

}  // namespace
}  // namespace openmoe
