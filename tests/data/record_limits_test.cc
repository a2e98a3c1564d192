// The reliability fixes of the data pipeline: data.max_record_bytes (jsonl, jsonl.zst, text
// trees), invalid UTF-8 and lone surrogates as bad records, the compressed offset of zstd damage,
// huge documents tokenized in bounded chunks, per-source counters, and `prep --npy`'s rows.
#include <algorithm>
#include <string>
#include <vector>

#include "data/batch_source.h"
#include "data/document_reader.h"
#include "data/line_reader.h"
#include "data/prep.h"
#include "core/io/utf8.h"
#include "gtest/gtest.h"
#include "tests/data/fixtures.h"

namespace openmoe {
namespace {

using testing::TempDir;
using testing::WriteOrDie;

#define EXPECT_MENTIONS(status, text)                               \
  EXPECT_NE((status).message().find(text), absl::string_view::npos) \
      << "'" << (status).message() << "' should mention '" << (text) << "'"

bool OneLine(const absl::Status& s) { return s.message().find('\n') == absl::string_view::npos; }

SourceConfig Config(const std::string& path) {
  SourceConfig c;
  c.add_paths(path);
  return c;
}

// Reads every document of `path`; returns the first error (OK if none), the texts and counters.
absl::Status ReadAll(const std::string& path, bool skip, int64_t max_record_bytes,
                     std::vector<std::string>* texts, CounterList* counters = nullptr) {
  auto src = ResolveSource(Config(path), 0);
  if (!src.ok()) return src.status();
  auto r = DocumentReader::Open(*src, 0, 1, skip, max_record_bytes);
  if (!r.ok()) return r.status();
  Document d;
  while (true) {
    auto more = (*r)->Next(&d);
    if (!more.ok()) return more.status();
    if (!*more) break;
    texts->push_back(d.text);
  }
  if (counters != nullptr) (*r)->AddCounters("", counters);
  return absl::OkStatus();
}

int64_t Get(const CounterList& c, const std::string& name) {
  for (auto& [n, v] : c)
    if (n == name) return v;
  ADD_FAILURE() << "no counter " << name;
  return -1;
}

std::string Line(const std::string& text) { return "{\"text\": " + JsonQuote(text) + "}\n"; }

class RecordLimitsTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(RecordLimitsTest, OverlongJsonlLineIsABadRecordNamingFileAndLine) {
  const std::string big(5000, 'x');
  const std::string jsonl = Line("one") + Line(big) + Line("three");
  for (const bool zst : {false, true}) {
    const std::string path = dir_ / (zst ? "a.jsonl.zst" : "a.jsonl");
    WriteOrDie(path, zst ? CompressZstd(jsonl) : jsonl);
    std::vector<std::string> texts;
    const absl::Status s = ReadAll(path, false, 1000, &texts);
    EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
    EXPECT_MENTIONS(s, path + ":2:");
    EXPECT_MENTIONS(s, "max_record_bytes=1000");
    EXPECT_MENTIONS(s, absl::StrCat(big.size() + 12, " bytes"));  // {"text": "..."} is 12 more
    EXPECT_TRUE(OneLine(s));
    // Skipped: the records around it are read, the long one counted.
    texts.clear();
    CounterList c;
    ASSERT_TRUE(ReadAll(path, true, 1000, &texts, &c).ok());
    EXPECT_EQ(texts, (std::vector<std::string>{"one", "three"}));
    EXPECT_EQ(Get(c, "bad_records"), 1);
    // A limit above the line lets it through whole.
    texts.clear();
    ASSERT_TRUE(ReadAll(path, false, 6000, &texts).ok());
    ASSERT_EQ(texts.size(), 3u);
    EXPECT_EQ(texts[1], big);
  }
}

TEST_F(RecordLimitsTest, OverlongLastLineWithoutNewlineAndLongerThanAReadChunk) {
  // 300 KB: more than the reader's 128 KiB chunk, so the line is read past, never held.
  const std::string big(300000, 'y');
  WriteOrDie(dir_ / "b.jsonl", Line("first") + "{\"text\": \"" + big + "\"}");
  std::vector<std::string> texts;
  CounterList c;
  ASSERT_TRUE(ReadAll(dir_ / "b.jsonl", true, 100000, &texts, &c).ok());
  EXPECT_EQ(texts, (std::vector<std::string>{"first"}));
  EXPECT_EQ(Get(c, "bad_records"), 1);
  auto reader = LineReader::Open(dir_ / "b.jsonl", false, 100000);
  ASSERT_TRUE(reader.ok());
  std::string_view line;
  ASSERT_TRUE(*(*reader)->Next(&line));
  const auto second = (*reader)->Next(&line);
  EXPECT_TRUE(absl::IsResourceExhausted(second.status())) << second.status();
  EXPECT_MENTIONS(second.status(), absl::StrCat(":2: record of ", big.size() + 12, " bytes"));
  EXPECT_FALSE(*(*reader)->Next(&line));  // then the end
}

TEST_F(RecordLimitsTest, OverlongTreeFileIsABadRecord) {
  ASSERT_TRUE(MakeDirectories(dir_ / "tree").ok());
  WriteOrDie(dir_ / "tree/a.py", "print('a')\n");
  WriteOrDie(dir_ / "tree/b.py", std::string(3000, '#') + "\n");
  std::vector<std::string> texts;
  const absl::Status s = ReadAll(dir_ / "tree", false, 2000, &texts);
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_MENTIONS(s, dir_ / "tree/b.py");
  texts.clear();
  CounterList c;
  ASSERT_TRUE(ReadAll(dir_ / "tree", true, 2000, &texts, &c).ok());
  EXPECT_EQ(texts, (std::vector<std::string>{"print('a')\n"}));
  EXPECT_EQ(Get(c, "bad_records"), 1);
  EXPECT_EQ(Get(c, "skipped_files"), 0);
}

TEST_F(RecordLimitsTest, InvalidUtf8AndLoneSurrogatesAreBadRecordsWithTheByteOffset) {
  struct Case {
    std::string line;
    size_t offset;  // of the bad byte or escape in the line
    std::string what;
  };
  const std::string head = "{\"text\": \"ab";  // offset 12 is the next byte
  const std::vector<Case> cases = {
      {head + "\xff" + "cd\"}", 12, "invalid UTF-8"},
      {head + "\xc3" + "(\"}", 12, "invalid UTF-8"},        // truncated 2-byte sequence
      {head + "\xc0\xaf\"}", 12, "invalid UTF-8"},          // overlong '/'
      {head + "\xed\xa0\x80\"}", 12, "invalid UTF-8"},      // encoded surrogate
      {head + "\xf4\x90\x80\x80\"}", 12, "invalid UTF-8"},  // above U+10FFFF
      {head + "\\ud800\"}", 12, "lone surrogate \\ud800"},
      {head + "\\ud800\\u0041\"}", 12, "lone surrogate \\ud800"},
      {head + "\\udc00x\"}", 12, "lone surrogate \\udc00"},
  };
  for (const Case& c : cases) {
    WriteOrDie(dir_ / "u.jsonl", Line("ok") + c.line + "\n" + Line("\xc3\xa9 \xf0\x9f\x98\x80"));
    std::vector<std::string> texts;
    const absl::Status s = ReadAll(dir_ / "u.jsonl", false, 1 << 20, &texts);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << c.line << ": " << s;
    EXPECT_MENTIONS(s, (dir_ / "u.jsonl") + ":2:");
    EXPECT_MENTIONS(s, c.what);
    EXPECT_MENTIONS(s, absl::StrCat("byte offset ", c.offset, " "));
    texts.clear();
    CounterList counters;
    ASSERT_TRUE(ReadAll(dir_ / "u.jsonl", true, 1 << 20, &texts, &counters).ok());
    EXPECT_EQ(texts, (std::vector<std::string>{"ok", "\xc3\xa9 \xf0\x9f\x98\x80"})) << c.line;
    EXPECT_EQ(Get(counters, "bad_records"), 1);
  }
  // A proper pair still decodes (U+1F600 as UTF-8).
  WriteOrDie(dir_ / "p.jsonl", "{\"text\": \"\\ud83d\\ude00\"}\n");
  std::vector<std::string> texts;
  ASSERT_TRUE(ReadAll(dir_ / "p.jsonl", false, 1 << 20, &texts).ok());
  EXPECT_EQ(texts, (std::vector<std::string>{"\xf0\x9f\x98\x80"}));
}

TEST(Utf8Test, AgreesWithACodePointByCodePointEncoder) {
  // Every code point encoded by hand is valid, and each single-byte damage is found where it is.
  for (uint32_t cp :
       {0x41u, 0x7Fu, 0x80u, 0x7FFu, 0x800u, 0xD7FFu, 0xE000u, 0xFFFFu, 0x10000u, 0x10FFFFu}) {
    std::string s;
    if (cp < 0x80) {
      s = std::string(1, static_cast<char>(cp));
    } else if (cp < 0x800) {
      s = {static_cast<char>(0xC0 | cp >> 6), static_cast<char>(0x80 | (cp & 0x3F))};
    } else if (cp < 0x10000) {
      s = {static_cast<char>(0xE0 | cp >> 12), static_cast<char>(0x80 | (cp >> 6 & 0x3F)),
           static_cast<char>(0x80 | (cp & 0x3F))};
    } else {
      s = {static_cast<char>(0xF0 | cp >> 18), static_cast<char>(0x80 | (cp >> 12 & 0x3F)),
           static_cast<char>(0x80 | (cp >> 6 & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
    EXPECT_EQ(FindInvalidUtf8("ab" + s + "c"), std::string_view::npos) << std::hex << cp;
    if (s.size() > 1) {
      EXPECT_EQ(FindInvalidUtf8("ab" + s.substr(0, s.size() - 1)), 2u) << cp;
    }
  }
  EXPECT_EQ(FindInvalidUtf8("abc\x80"), 3u);
}

TEST_F(RecordLimitsTest, ZstdDamageReportsTheCompressedOffset) {
  std::string jsonl;
  for (const std::string& d : testing::GeneratedDocuments(7, 4000)) jsonl += Line(d);
  const std::string z = CompressZstd(jsonl);
  ASSERT_GT(z.size(), 60000u);
  // Overwrite 64 bytes from 20000 on: the decoder sees it in the block holding byte 20000, so
  // the offset reported is at or after 20000, and within that block (< 128 KiB of output).
  std::string damaged = z;
  for (size_t i = 20000; i < 20064; ++i) damaged[i] = static_cast<char>(0xA5 ^ i);
  WriteOrDie(dir_ / "d.jsonl.zst", damaged);
  std::vector<std::string> texts;
  const absl::Status s = ReadAll(dir_ / "d.jsonl.zst", false, 1 << 20, &texts);
  ASSERT_FALSE(s.ok());
  if (absl::IsDataLoss(s)) {
    const std::string m(s.message());
    const size_t at = m.find("near compressed byte ");
    ASSERT_NE(at, std::string::npos) << m;
    const int64_t offset = std::atoll(m.c_str() + at + 21);
    EXPECT_GE(offset, 20000) << m;
    EXPECT_LE(offset, 20000 + 65536) << m;
  } else {
    // Damage the decoder cannot see decodes to wrong text: then the JSON is malformed.
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  }
  auto whole = DecompressZstd(damaged, "d");
  if (!whole.ok() && whole.status().message().find("near compressed byte ") != std::string::npos) {
    const std::string m(whole.status().message());
    EXPECT_GE(std::atoll(m.c_str() + m.find("near compressed byte ") + 21), 20000) << m;
  }
}

TEST_F(RecordLimitsTest, HugeDocumentsTokenizeInChunksLikeTheWholeText) {
  auto tok = Tokenizer::Load(testing::TinyTokenizerPath(), 100);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // ~200 KB of prose: cut at single spaces, the ids are those of the sentences encoded one by
  // one as the same words (each sentence after the first starts after a space).
  std::string text;
  std::vector<std::string> sentences;
  for (int64_t i = 0; text.size() < 200000; ++i) {
    std::string s = testing::GeneratedDocument(3, i, 1);
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    sentences.push_back(s);
    text += (text.empty() ? "" : " ") + s;
  }
  std::vector<int32_t> ids;
  ASSERT_TRUE((*tok)->Encode(text, &ids).ok());
  auto decoded = (*tok)->Decode(ids);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, text);
  std::vector<int32_t> expected, part;
  for (const std::string& s : sentences) {
    ASSERT_TRUE((*tok)->Encode(s, &part).ok());  // each < 64 KiB: one sentencepiece call
    expected.insert(expected.end(), part.begin(), part.end());
  }
  EXPECT_EQ(ids, expected);
  // Text with no space at all is cut after newlines: nothing is lost, but each cut adds the
  // next chunk's dummy-prefix space (one per 32-64 KiB).
  std::string dense;
  while (dense.size() < 150000) dense += "abc\xc3\xa9" + std::string(dense.size() % 7 ? "" : "\n");
  ASSERT_TRUE((*tok)->Encode(dense, &ids).ok());
  decoded = (*tok)->Decode(ids);
  ASSERT_TRUE(decoded.ok());
  std::string without_spaces = *decoded;
  without_spaces.erase(std::remove(without_spaces.begin(), without_spaces.end(), ' '),
                       without_spaces.end());
  EXPECT_EQ(without_spaces, dense);
  EXPECT_LE(decoded->size() - dense.size(), dense.size() / 32768);
}

TEST_F(RecordLimitsTest, PerSourceCountersThroughTheBatchSource) {
  // Source "a": 3 good records, 1 malformed, 1 too long; source "b": a tree with one binary file.
  const std::string good = Line("alpha beta") + Line("gamma delta") + Line("epsilon");
  WriteOrDie(dir_ / "a.jsonl", good + "{oops\n" + Line(std::string(3000, 'z')));
  ASSERT_TRUE(MakeDirectories(dir_ / "b").ok());
  WriteOrDie(dir_ / "b/x.txt", "the model routes each token\n");
  WriteOrDie(dir_ / "b/y.bin", std::string("\0\1\2", 3));
  JobSpec spec = testing::CorpusJob({dir_ / "a.jsonl"}, 16, OBJECTIVE_CAUSAL_LM);
  spec.mutable_data()->set_skip_bad_records(true);
  spec.mutable_data()->set_max_record_bytes(2000);
  spec.mutable_data()->mutable_sources(0)->set_name("a");
  SourceConfig* b = spec.mutable_data()->add_sources();
  b->set_name("b");
  b->add_paths(dir_ / "b");
  auto source = MakeBatchSource(spec, 0, 1);
  ASSERT_TRUE(source.ok()) << source.status();
  Batch batch;
  ASSERT_TRUE((*source)->Next(8, 16, &batch).ok());
  const auto counters = (*source)->Counters();
  auto get = [&](const std::string& n) {
    for (auto& [k, v] : counters)
      if (k == n) return v;
    ADD_FAILURE() << "no counter " << n;
    return int64_t{-1};
  };
  for (const std::string name : {"a", "b"}) {
    EXPECT_GT(get("data." + name + ".documents"), 0);
    get("data." + name + ".padding_tokens");
  }
  EXPECT_GE(get("data.a.bad_records"), 2);  // a pass over a.jsonl sees both bad lines
  EXPECT_EQ(get("data.a.bad_records") % 2, 0);
  EXPECT_GE(get("data.b.skipped_files"), 1);
  EXPECT_EQ(get("data.a.skipped_files"), 0);
  // Padding per source adds up to the total, which the rows show (segment id 0).
  int64_t padding = 0;
  for (int64_t i = 0; i < batch.num_tokens(); ++i) padding += batch.segment_ids[i] == 0;
  EXPECT_EQ(get("data.padding_tokens"), padding);
  EXPECT_EQ(get("data.a.padding_tokens") + get("data.b.padding_tokens"), padding);
}

TEST_F(RecordLimitsTest, CausalLmRowsAreTheEosSeparatedStreamOfTheInputs) {
  const std::vector<std::string> docs = testing::GeneratedDocuments(5, 40);
  WriteOrDie(dir_ / "h.jsonl", testing::JsonlOf(docs));
  PrepOptions o;
  o.inputs = {Config(dir_ / "h.jsonl")};
  o.tokenizer_model = testing::TinyTokenizerPath();
  auto tok = Tokenizer::Load(o.tokenizer_model, 100);
  ASSERT_TRUE(tok.ok());
  // Independently: EOS d1 EOS d2 ... from the tokenizer, cut into rows of 16.
  std::vector<int32_t> stream, ids;
  for (const std::string& d : docs) {
    ASSERT_TRUE((*tok)->Encode(d, &ids).ok());
    stream.push_back((*tok)->eos_id());
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  const int64_t rows = 5, seq_len = 16;
  ASSERT_GE(static_cast<int64_t>(stream.size()), rows * seq_len);
  auto got = HeldOutRows(o, rows, seq_len);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, std::vector<int32_t>(stream.begin(), stream.begin() + rows * seq_len));
  // Asking for more rows than the inputs make: an error with the count.
  const int64_t full = static_cast<int64_t>(stream.size()) / seq_len;
  auto many = HeldOutRows(o, full + 1, seq_len);
  EXPECT_TRUE(absl::IsFailedPrecondition(many.status())) << many.status();
  EXPECT_MENTIONS(many.status(), absl::StrCat("make only ", full, " full rows of 16"));
  EXPECT_MENTIONS(many.status(), dir_ / "h.jsonl");
  EXPECT_TRUE(HeldOutRows(o, full, seq_len).ok());
}

}  // namespace
}  // namespace openmoe

namespace openmoe {
namespace {

TEST(RecordLimitsSpecTest, NonPositiveMaxRecordBytesIsAProblemOfTheSpec) {
  JobSpec spec = testing::CorpusJob({"/nonexistent.jsonl"}, 16, OBJECTIVE_CAUSAL_LM);
  EXPECT_TRUE(DataConfigProblems(spec).empty());
  spec.mutable_data()->set_max_record_bytes(0);
  const std::vector<std::string> p = DataConfigProblems(spec);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0], "data.max_record_bytes=0 must be >= 1");
}

}  // namespace
}  // namespace openmoe
