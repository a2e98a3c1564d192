#include "core/io/json.h"

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

// ParseJson builds the tree the same grammar accepts: every type, document order kept, strings
// unescaped, numbers as their literal text.
TEST(JsonTree, BuildsEveryTypeInDocumentOrder) {
  auto v = ParseJson(R"( {"b": [1, -2.5e3, "x\u00e9"], "a": {"t": true, "f": false, "n": null},
                          "b": "last"} )");
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->type, JsonValue::kObject);
  ASSERT_EQ(v->fields.size(), 3u);
  EXPECT_EQ(v->fields[0].first, "b");
  const JsonValue& array = v->fields[0].second;
  ASSERT_EQ(array.type, JsonValue::kArray);
  ASSERT_EQ(array.items.size(), 3u);
  EXPECT_EQ(array.items[0].type, JsonValue::kNumber);
  EXPECT_EQ(array.items[0].text, "1");
  EXPECT_EQ(array.items[1].text, "-2.5e3");
  EXPECT_EQ(array.items[2].type, JsonValue::kString);
  EXPECT_EQ(array.items[2].text, "x\xc3\xa9");
  const JsonValue* a = v->Find("a");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->fields.size(), 3u);
  EXPECT_EQ(a->fields[0].second.type, JsonValue::kBool);
  EXPECT_EQ(a->fields[0].second.text, "true");
  EXPECT_EQ(a->fields[1].second.text, "false");
  EXPECT_EQ(a->fields[2].second.type, JsonValue::kNull);
  ASSERT_NE(v->Find("b"), nullptr);
  EXPECT_EQ(v->Find("b")->text, "last");  // a repeated key: the last wins, as ParseJsonObject
  EXPECT_EQ(v->Find("absent"), nullptr);
  auto scalar = ParseJson(" 7 ");
  ASSERT_TRUE(scalar.ok());
  EXPECT_EQ(scalar->type, JsonValue::kNumber);
}

// The tree parser rejects what the line validator rejects, with the same column.
TEST(JsonTree, ErrorsMatchTheLineValidator) {
  for (const char* bad : {R"({"a": 1,})", R"({"a": [1 2]})", R"({"a": "\ud800"})", "{\"a\": 01}",
                          R"({"a": tru})", R"({"a": 1} x)"}) {
    std::vector<JsonFieldRequest> none;
    const absl::Status line = ParseJsonObject(bad, &none);
    auto tree = ParseJson(bad);
    ASSERT_FALSE(line.ok()) << bad;
    ASSERT_FALSE(tree.ok()) << bad;
    const std::string want(line.message()), got(tree.status().message());
    EXPECT_EQ(want.substr(0, want.find(':')), got.substr(0, got.find(':'))) << bad;
  }
  EXPECT_FALSE(ParseJson("").ok());
  EXPECT_FALSE(ParseJson(std::string(600, '[') + std::string(600, ']')).ok());
}

}  // namespace
}  // namespace openmoe
