#include "data/json_line.h"

#include "gtest/gtest.h"

namespace openmoe {
namespace {

std::vector<JsonFieldRequest> Want(std::initializer_list<const char*> names) {
  std::vector<JsonFieldRequest> out;
  for (const char* n : names) {
    out.emplace_back();
    out.back().name = n;
  }
  return out;
}

TEST(JsonLine, ExtractsTopLevelStringsAndSkipsTheRest) {
  auto f = Want({"text", "lang", "missing"});
  const std::string line =
      R"({"meta": {"text": "nested, ignored", "a": [1, -2.5e-3, true, false, null, {}]},)"
      R"( "text": "hello\nworld \"q\" \\ \/ \u00e9 \ud83d\ude00", "lang": "python"})";
  ASSERT_TRUE(ParseJsonObject(line, &f).ok());
  EXPECT_TRUE(f[0].found && f[0].is_string);
  EXPECT_EQ(f[0].value, "hello\nworld \"q\" \\ / \xc3\xa9 \xf0\x9f\x98\x80");
  EXPECT_EQ(f[1].value, "python");
  EXPECT_FALSE(f[2].found);
}

TEST(JsonLine, NonStringFieldIsReportedAsSuch) {
  auto f = Want({"text"});
  ASSERT_TRUE(ParseJsonObject(R"({"text": 42})", &f).ok());
  EXPECT_TRUE(f[0].found);
  EXPECT_FALSE(f[0].is_string);
}

TEST(JsonLine, QuoteRoundTrips) {
  const std::string s = "tab\there \"quoted\" back\\slash\n\x01 ünïcode";
  auto f = Want({"t"});
  ASSERT_TRUE(ParseJsonObject("{\"t\": " + JsonQuote(s) + "}", &f).ok());
  EXPECT_EQ(f[0].value, s);
}

TEST(JsonLine, MalformedLinesNameTheColumn) {
  struct Case {
    const char* line;
    const char* what;
  };
  for (const Case& c :
       {Case{R"({"text": "a" "b"})", "column 14: expected ',' or '}'"},
        Case{R"({"text": "unterminated)", "unterminated string"},
        Case{R"({"text": tru})", "invalid literal"},
        Case{R"({"text": "x"} trailing)", "unexpected text after the object"},
        Case{R"(["not", "an object"])", "expected '{'"}, Case{"", "empty line"},
        Case{R"({"a": 01})", "expected ',' or '}'"},
        Case{R"({"a": "bad \q escape"})", "invalid escape"},
        Case{"{\"a\": \"raw\ttab\"}", "control character"},
        Case{R"({"a": [1, 2})", "expected ',' or ']'"},
        Case{R"({"a": 1,})", "expected a string key"}, Case{R"({"a" 1})", "expected ':'"}}) {
    auto f = Want({"text"});
    const absl::Status s = ParseJsonObject(c.line, &f);
    EXPECT_FALSE(s.ok()) << c.line;
    EXPECT_NE(s.message().find(c.what), std::string::npos) << c.line << " -> " << s.message();
    EXPECT_EQ(s.message().rfind("column ", 0), 0u) << s.message();
  }
}

TEST(JsonLine, DeepNestingIsRejectedNotCrashing) {
  std::string line = "{\"a\": " + std::string(10000, '[') + std::string(10000, ']') + "}";
  auto f = Want({"text"});
  EXPECT_FALSE(ParseJsonObject(line, &f).ok());
}

}  // namespace
}  // namespace openmoe
