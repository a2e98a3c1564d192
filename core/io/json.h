// JSON, the project's one parser: validating one jsonl line as a JSON object and pulling out
// top-level string fields (RedPajama's "text", The Stack's "content" and "lang"), parsing a small
// document into a tree (ParseJson: the safetensors header), and escaping for writers.
//
// The whole line is checked against the JSON grammar (RFC 8259: objects, arrays, strings with
// every escape including surrogate pairs, numbers, literals; nesting at most 512 deep), so a
// malformed record is reported rather than half-read. Strings must be valid UTF-8
// (core/io/utf8.h) and \u escapes must not leave a lone surrogate (a high one not followed by a
// low one, or a low one alone): either is a syntax error whose message gives the byte offset.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace openmoe {

struct JsonFieldRequest {
  std::string name;        // top-level key to extract
  bool found = false;      // the key is present
  bool is_string = false;  // ... and its value is a string
  std::string value;       // the unescaped UTF-8 string when is_string
};

// Parses `line` as one JSON object and fills the requested fields (a repeated key: the last one
// wins, as in most parsers). On a syntax error: InvalidArgument "column C: <what>" (1-based).
absl::Status ParseJsonObject(std::string_view line, std::vector<JsonFieldRequest>* fields);

// A parsed JSON value. Numbers keep their literal text (the caller picks the type it needs).
struct JsonValue {
  enum Type { kNull, kBool, kNumber, kString, kArray, kObject } type = kNull;
  std::string text;  // a string's unescaped UTF-8, a number's literal, or true / false / null
  std::vector<JsonValue> items;                           // kArray
  std::vector<std::pair<std::string, JsonValue>> fields;  // kObject, in document order

  // The value of `key` in an object (the last one when repeated), or null.
  const JsonValue* Find(std::string_view key) const;
};

// Parses `text` as one JSON value of any type (same grammar, limits and errors as
// ParseJsonObject). Builds the whole tree: for documents of modest size, not corpus lines.
absl::StatusOr<JsonValue> ParseJson(std::string_view text);

// `text` as a JSON string literal, quotes included.
std::string JsonQuote(std::string_view text);

}  // namespace openmoe
