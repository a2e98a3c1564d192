// data.sources.lang_field feeds per-language document counters; the names are fixed, so every
// chip and rank reports the same list (the trainer sums them by position).
#include "data/language_counts.h"

#include <map>

#include "data/document_reader.h"
#include "gtest/gtest.h"
#include "tests/data/fixtures.h"

namespace openmoe {
namespace {

std::map<std::string, int64_t> AsMap(const CounterList& counters) {
  std::map<std::string, int64_t> m;
  for (const auto& [name, value] : counters) m[name] = value;
  return m;
}

TEST(LanguageCounts, MatchesCaseInsensitivelyAndPutsTheRestInOther) {
  LanguageCounts counts;
  for (const char* lang : {"Python", "python", "C++", "c", "Brainfuck", "", "GO"}) counts.Add(lang);
  CounterList out;
  counts.AddCounters("data.s.", &out);
  ASSERT_EQ(out.size(), LanguageCounts::Languages().size() + 1);
  EXPECT_EQ(out.back().first, "data.s.lang.other.documents");
  const auto m = AsMap(out);
  EXPECT_EQ(m.at("data.s.lang.python.documents"), 2);
  EXPECT_EQ(m.at("data.s.lang.c++.documents"), 1);
  EXPECT_EQ(m.at("data.s.lang.c.documents"), 1);
  EXPECT_EQ(m.at("data.s.lang.go.documents"), 1);
  EXPECT_EQ(m.at("data.s.lang.other.documents"), 2);
  EXPECT_EQ(m.at("data.s.lang.java.documents"), 0);
  // Same names in the same order whatever was counted.
  CounterList empty;
  LanguageCounts().AddCounters("data.s.", &empty);
  ASSERT_EQ(empty.size(), out.size());
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(empty[i].first, out[i].first);
}

SourceConfig StackConfig(const std::string& path, const std::string& lang_field) {
  SourceConfig c;
  c.set_name("stack");
  c.add_paths(path);
  c.set_text_field("content");
  c.set_lang_field(lang_field);
  return c;
}

TEST(LanguageCounts, ReaderCountsDocumentsByLangField) {
  testing::TempDir dir;
  testing::WriteOrDie(dir / "code.jsonl",
                      "{\"content\": \"int main() {}\\n\", \"lang\": \"C\"}\n"
                      "{\"content\": \"print(1)\\n\", \"lang\": \"Python\"}\n"
                      "{\"content\": \"print(2)\\n\", \"lang\": \"Python\"}\n"
                      "{\"content\": \"x\\n\", \"lang\": \"Befunge\"}\n"
                      "{\"content\": \"y\\n\"}\n");
  auto reader = DocumentReader::Open(*ResolveSource(StackConfig(dir / "code.jsonl", "lang"), 0), 0, 1,
                                     false);
  ASSERT_TRUE(reader.ok()) << reader.status();
  Document doc;
  int docs = 0;
  while (true) {
    auto more = (*reader)->Next(&doc);
    ASSERT_TRUE(more.ok()) << more.status();
    if (!*more) break;
    ++docs;
  }
  EXPECT_EQ(docs, 5);
  CounterList counters;
  (*reader)->AddCounters("data.stack.", &counters);
  const auto m = AsMap(counters);
  EXPECT_EQ(m.at("data.stack.lang.c.documents"), 1);
  EXPECT_EQ(m.at("data.stack.lang.python.documents"), 2);
  EXPECT_EQ(m.at("data.stack.lang.other.documents"), 2);  // Befunge, and the missing field
  EXPECT_EQ(m.at("data.stack.bad_records"), 0);

  // Without a lang_field there are no language counters at all.
  auto plain = DocumentReader::Open(*ResolveSource(StackConfig(dir / "code.jsonl", ""), 0), 0, 1,
                                    false);
  ASSERT_TRUE(plain.ok()) << plain.status();
  CounterList plain_counters;
  (*plain)->AddCounters("data.stack.", &plain_counters);
  for (const auto& [name, value] : plain_counters)
    EXPECT_EQ(name.find(".lang."), std::string::npos) << name;
}

}  // namespace
}  // namespace openmoe
