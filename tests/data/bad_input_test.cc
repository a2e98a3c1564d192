// Every bad input of the data issue, through the path training takes (MakeBatchSource, Next):
// one clear line naming the file (and line or record), or, with data.skip_bad_records, skipped
// and counted in the metrics.
#include <fstream>

#include "data/batch_source.h"
#include "data/prep.h"
#include "data/token_shards.h"
#include "gtest/gtest.h"
#include "tests/data/fixtures.h"

namespace openmoe {
namespace {

using testing::CorpusJob;
using testing::TempDir;
using testing::WriteOrDie;

// The first error MakeBatchSource or 30 calls of Next give (OK if none).
absl::Status FirstError(const JobSpec& spec, int64_t shard = 0, int64_t num_shards = 1,
                        int64_t rows = 4) {
  auto source = MakeBatchSource(spec, shard, num_shards);
  if (!source.ok()) return source.status();
  Batch b;
  for (int i = 0; i < 30; ++i)
    if (auto s = (*source)->Next(rows, spec.train().seq_len(), &b); !s.ok()) return s;
  return absl::OkStatus();
}

int64_t Counter(const JobSpec& spec, const std::string& name, int64_t rows = 4) {
  auto source = MakeBatchSource(spec, 0, 1);
  EXPECT_TRUE(source.ok()) << source.status();
  if (!source.ok()) return -1;
  Batch b;
  for (int i = 0; i < 30; ++i) {
    const absl::Status s = (*source)->Next(rows, spec.train().seq_len(), &b);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) return -1;
  }
  for (auto& [n, v] : (*source)->Counters())
    if (n == name) return v;
  ADD_FAILURE() << "no counter " << name;
  return -1;
}

bool OneLine(const absl::Status& s) { return s.message().find('\n') == absl::string_view::npos; }

#define EXPECT_MENTIONS(status, text)                               \
  EXPECT_NE((status).message().find(text), absl::string_view::npos) \
      << "'" << (status).message() << "' should mention '" << (text) << "'"

// Shards written by hand with the tiny tokenizer's identity, holding the given documents.
void WriteShards(const std::string& dir, const std::vector<std::vector<int32_t>>& docs) {
  auto tok = Tokenizer::Load(testing::TinyTokenizerPath(), 100);
  ASSERT_TRUE(tok.ok());
  ASSERT_TRUE(MakeDirectories(dir).ok());
  TokenShardWriter w(dir, 8, (*tok)->vocab_size(), (*tok)->pieces(), (*tok)->model_checksum());
  for (const auto& d : docs) ASSERT_TRUE(w.Add(d).ok());
  ASSERT_TRUE(w.Finish().ok());
}

class BadInputTest : public ::testing::Test {
 protected:
  JobSpec Job(const std::string& path) { return CorpusJob({path}, 32, OBJECTIVE_CAUSAL_LM); }
  std::string GoodJsonl(int n) { return testing::JsonlOf(testing::GeneratedDocuments(4, n)); }
  TempDir dir_;
};

TEST_F(BadInputTest, MissingFile) {
  const absl::Status s = FirstError(Job(dir_ / "nope.jsonl.zst"));
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_MENTIONS(s, dir_ / "nope.jsonl.zst");
  EXPECT_TRUE(OneLine(s));
}

TEST_F(BadInputTest, TruncatedZstd) {
  const std::string z = CompressZstd(GoodJsonl(3000));  // several zstd blocks: a readable part
  WriteOrDie(dir_ / "t.jsonl.zst", z.substr(0, z.size() / 2));
  const absl::Status s = FirstError(Job(dir_ / "t.jsonl.zst"), 0, 1, /*rows=*/512);
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_MENTIONS(s, dir_ / "t.jsonl.zst");
  EXPECT_MENTIONS(s, "truncated");
  EXPECT_TRUE(OneLine(s));
  // Skipping: the rest of the broken file is skipped and counted; the readable part trains.
  JobSpec skip = Job(dir_ / "t.jsonl.zst");
  skip.mutable_data()->set_skip_bad_records(true);
  EXPECT_GE(Counter(skip, "data.text.bad_records", /*rows=*/512), 1);
}

TEST_F(BadInputTest, MalformedJsonLineNamesTheLine) {
  std::string text = GoodJsonl(6);
  text += "{\"text\": \"cut off\n";  // line 7
  text += GoodJsonl(3);
  WriteOrDie(dir_ / "m.jsonl", text);
  const absl::Status s = FirstError(Job(dir_ / "m.jsonl"));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_MENTIONS(s, dir_ / "m.jsonl:7: malformed JSON");
  EXPECT_TRUE(OneLine(s));
  JobSpec skip = Job(dir_ / "m.jsonl");
  skip.mutable_data()->set_skip_bad_records(true);
  EXPECT_GE(Counter(skip, "data.text.bad_records"), 1);
}

TEST_F(BadInputTest, MissingTextField) {
  WriteOrDie(dir_ / "f.jsonl", GoodJsonl(2) + "{\"content\": \"code, not text\"}\n" + GoodJsonl(2));
  const absl::Status s = FirstError(Job(dir_ / "f.jsonl"));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_MENTIONS(s, dir_ / "f.jsonl:3: field \"text\" is missing");
  JobSpec skip = Job(dir_ / "f.jsonl");
  skip.mutable_data()->set_skip_bad_records(true);
  EXPECT_GE(Counter(skip, "data.text.bad_records"), 1);
}

TEST_F(BadInputTest, EmptySource) {
  WriteOrDie(dir_ / "empty.jsonl", "");
  WriteOrDie(dir_ / "blank.jsonl", "\n\n  \n");
  for (const char* name : {"empty.jsonl", "blank.jsonl"}) {
    const absl::Status s = FirstError(Job(dir_ / name));
    EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
    EXPECT_MENTIONS(s, "empty source");
    EXPECT_MENTIONS(s, dir_ / name);
    EXPECT_TRUE(OneLine(s));
  }
  // Documents that are all empty strings: empty too (never an endless loop), from text or shards.
  WriteOrDie(dir_ / "hollow.jsonl", "{\"text\": \"\"}\n{\"text\": \"\"}\n");
  EXPECT_MENTIONS(FirstError(Job(dir_ / "hollow.jsonl")), "empty source");
  WriteShards(dir_ / "hollow_shards", {{}, {}, {}});
  EXPECT_MENTIONS(FirstError(Job(dir_ / "hollow_shards")), "empty source");
  // All records bad and skipped is empty too (never an endless loop).
  WriteOrDie(dir_ / "allbad.jsonl", "x\ny\n");
  JobSpec skip = Job(dir_ / "allbad.jsonl");
  skip.mutable_data()->set_skip_bad_records(true);
  const absl::Status s = FirstError(skip);
  EXPECT_MENTIONS(s, "empty source");
  EXPECT_MENTIONS(s, "2 bad records skipped");
  // A source too small for the number of shards: shard 3 of 4 has nothing.
  WriteOrDie(dir_ / "three.jsonl", GoodJsonl(3));
  const absl::Status few = FirstError(Job(dir_ / "three.jsonl"), 3, 4);
  EXPECT_MENTIONS(few, "data shard 3 of 4");
}

TEST_F(BadInputTest, TokenIdOutsideTheVocabulary) {
  WriteShards(dir_ / "s", {{10, 11, 12, 13, 14, 15, 16, 17}, {20, 21, 9999, 23}, {30, 31, 32}});
  const absl::Status s = FirstError(Job(dir_ / "s"));
  EXPECT_TRUE(absl::IsOutOfRange(s)) << s;
  EXPECT_MENTIONS(s, dir_ / "s/shard-00001.zst: document 0 (record 1): token id 9999");
  EXPECT_MENTIONS(s, "outside the vocabulary [0, 500)");
  EXPECT_TRUE(OneLine(s));
  JobSpec skip = Job(dir_ / "s");
  skip.mutable_data()->set_skip_bad_records(true);
  EXPECT_GE(Counter(skip, "data.text.bad_records"), 1);
}

TEST_F(BadInputTest, ShardChecksumMismatch) {
  WriteShards(dir_ / "s",
              {{10, 11, 12, 13, 14, 15, 16, 17}, {20, 21, 22, 23, 24, 25, 26, 27}, {30, 31}});
  {
    std::fstream f(dir_ / "s/shard-00001.zst", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.put('\x5a');
  }
  const absl::Status s = FirstError(Job(dir_ / "s"));
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_MENTIONS(s, dir_ / "s/shard-00001.zst: checksum mismatch");
  EXPECT_TRUE(OneLine(s));
  JobSpec skip = Job(dir_ / "s");
  skip.mutable_data()->set_skip_bad_records(true);
  EXPECT_EQ(Counter(skip, "data.text.bad_shards"), 1);
}

TEST_F(BadInputTest, TruncatedShardAndBrokenIndex) {
  WriteShards(dir_ / "s", {{10, 11, 12, 13, 14, 15, 16, 17}, {20, 21, 22}});
  auto bytes = ReadFile(dir_ / "s/shard-00000.zst");
  WriteOrDie(dir_ / "s/shard-00000.zst", bytes->substr(0, bytes->size() - 3));
  const absl::Status s = FirstError(Job(dir_ / "s"));
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_MENTIONS(s, dir_ / "s/shard-00000.zst");
  WriteOrDie(dir_ / "s/index.txt", "openmoe-token-shards 2\nvocab_size twelve\n");
  const absl::Status i = FirstError(Job(dir_ / "s"));
  EXPECT_MENTIONS(i, dir_ / "s/index.txt:2");
}

TEST_F(BadInputTest, ShardsFromAnotherTokenizer) {
  ASSERT_TRUE(MakeDirectories(dir_ / "s").ok());
  TokenShardWriter w(dir_ / "s", 8, 500, 400, /*tokenizer_checksum=*/12345);
  ASSERT_TRUE(w.Add({10, 11}).ok());
  ASSERT_TRUE(w.Finish().ok());
  const absl::Status s = FirstError(Job(dir_ / "s"));
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_MENTIONS(s, "another tokenizer");
}

TEST_F(BadInputTest, VocabularyLargerThanTheModel) {
  WriteOrDie(dir_ / "a.jsonl", GoodJsonl(3));
  JobSpec spec = Job(dir_ / "a.jsonl");
  spec.mutable_model()->set_vocab_size(300);
  const absl::Status s = FirstError(spec);
  EXPECT_MENTIONS(s, "model.vocab_size=300");
}

TEST_F(BadInputTest, SpecProblemsNameTheField) {
  JobSpec spec;
  spec.mutable_data()->set_source(DATA_CORPUS);
  const absl::Status s = FirstError(spec);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_MENTIONS(s, "data.sources is empty");
  EXPECT_MENTIONS(s, "data.tokenizer.model is empty");
  WriteOrDie(dir_ / "a.jsonl", GoodJsonl(3));
  JobSpec tiny = Job(dir_ / "a.jsonl");
  tiny.mutable_train()->set_seq_len(3);
  tiny.mutable_data()->set_objective(OBJECTIVE_UL2);
  const absl::Status fit = FirstError(tiny);
  EXPECT_MENTIONS(fit, "data.ul2.denoisers[0]: no example fits train.seq_len=3");
  JobSpec no_tok = Job(dir_ / "a.jsonl");
  no_tok.mutable_data()->mutable_tokenizer()->set_model(dir_ / "missing.model");
  const absl::Status t = FirstError(no_tok);
  EXPECT_TRUE(absl::IsNotFound(t));
  EXPECT_MENTIONS(t, dir_ / "missing.model");
}

}  // namespace
}  // namespace openmoe
