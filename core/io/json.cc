#include "core/io/json.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/io/utf8.h"

namespace openmoe {
namespace {

constexpr int kMaxDepth = 512;

class Parser {
 public:
  // `fields` null: no top-level fields are pulled out (ParseJson builds the whole tree instead).
  Parser(std::string_view s, std::vector<JsonFieldRequest>* fields) : s_(s), fields_(fields) {}

  // One JSON object, the whole of s_ (jsonl records).
  absl::Status ParseTop() {
    SkipSpace();
    if (Peek() != '{')
      return Error(i_ < s_.size() ? "expected '{' (a JSON object per line)"
                                  : "empty line, expected a JSON object");
    if (auto st = Object(0, /*top=*/true, nullptr); !st.ok()) return st;
    SkipSpace();
    if (i_ != s_.size()) return Error("unexpected text after the object");
    return absl::OkStatus();
  }

  // One JSON value of any type, the whole of s_, into *out.
  absl::Status ParseDocument(JsonValue* out) {
    if (auto st = Value(0, out); !st.ok()) return st;
    SkipSpace();
    if (i_ != s_.size()) return Error("unexpected text after the value");
    return absl::OkStatus();
  }

 private:
  char Peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void SkipSpace() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat("column ", i_ + 1, ": ", what));
  }
  // For errors a reader must locate in a long line: the 0-based byte offset too.
  absl::Status ErrorAt(size_t at, const std::string& what) {
    i_ = at;
    return Error(absl::StrCat(what, " at byte offset ", at, " of the line"));
  }

  // Parses a value; builds it in *out unless out is null (then it is only checked).
  absl::Status Value(int depth, JsonValue* out) {
    SkipSpace();
    switch (Peek()) {
      case '{':
        return Object(depth + 1, false, out);
      case '[':
        return Array(depth + 1, out);
      case '"':
        if (out != nullptr) out->type = JsonValue::kString;
        return String(out != nullptr ? &out->text : nullptr);
      case 't':
        return Literal("true", JsonValue::kBool, out);
      case 'f':
        return Literal("false", JsonValue::kBool, out);
      case 'n':
        return Literal("null", JsonValue::kNull, out);
      default:
        return Number(out);
    }
  }

  absl::Status Literal(std::string_view word, JsonValue::Type type, JsonValue* out) {
    if (s_.substr(i_, word.size()) != word) return Error("invalid literal");
    i_ += word.size();
    if (out != nullptr) {
      out->type = type;
      out->text = word;
    }
    return absl::OkStatus();
  }

  absl::Status Number(JsonValue* out) {
    const size_t start = i_;
    if (Peek() == '-') ++i_;
    if (Peek() == '0') {
      ++i_;
    } else if (Peek() >= '1' && Peek() <= '9') {
      while (Peek() >= '0' && Peek() <= '9') ++i_;
    } else {
      i_ = start;
      return Error(i_ < s_.size() ? "expected a value"
                                  : "unexpected end of line, expected a value");
    }
    if (Peek() == '.') {
      ++i_;
      if (!(Peek() >= '0' && Peek() <= '9')) return Error("expected digits after '.'");
      while (Peek() >= '0' && Peek() <= '9') ++i_;
    }
    if (Peek() == 'e' || Peek() == 'E') {
      ++i_;
      if (Peek() == '+' || Peek() == '-') ++i_;
      if (!(Peek() >= '0' && Peek() <= '9')) return Error("expected digits in the exponent");
      while (Peek() >= '0' && Peek() <= '9') ++i_;
    }
    if (out != nullptr) {
      out->type = JsonValue::kNumber;
      out->text = s_.substr(start, i_ - start);
    }
    return absl::OkStatus();
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  bool Hex4(uint32_t* v) {
    if (i_ + 4 > s_.size()) return false;
    uint32_t x = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_ + k];
      x <<= 4;
      if (c >= '0' && c <= '9')
        x |= c - '0';
      else if (c >= 'a' && c <= 'f')
        x |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        x |= c - 'A' + 10;
      else
        return false;
    }
    i_ += 4;
    *v = x;
    return true;
  }

  // Parses a string at s_[i_] == '"'; appends its unescaped value to *out when out != null.
  absl::Status String(std::string* out) {
    ++i_;
    if (out != nullptr) {
      // Reserve the raw length (the value is at most that): a huge value is allocated once,
      // rather than grown by doubling to up to twice its size.
      size_t j = i_;
      while (j < s_.size() && s_[j] != '"') j += s_[j] == '\\' ? 2 : 1;
      out->reserve(out->size() + std::min(j, s_.size()) - i_);
    }
    while (true) {
      // Copy the run of plain characters at once.
      size_t j = i_;
      while (j < s_.size() && s_[j] != '"' && s_[j] != '\\' &&
             static_cast<unsigned char>(s_[j]) >= 0x20) {
        if (static_cast<unsigned char>(s_[j]) < 0x80) {
          ++j;
          continue;
        }
        const size_t n = Utf8SequenceLength(s_, j);
        if (n == 0)
          return ErrorAt(
              j, absl::StrFormat("invalid UTF-8 (byte 0x%02x)", static_cast<unsigned char>(s_[j])));
        j += n;
      }
      if (out != nullptr) out->append(s_.data() + i_, j - i_);
      i_ = j;
      if (i_ >= s_.size()) return Error("unterminated string");
      const char c = s_[i_];
      if (c == '"') {
        ++i_;
        return absl::OkStatus();
      }
      if (c != '\\') return Error("control character inside a string (must be escaped)");
      ++i_;
      const char e = Peek();
      ++i_;
      char plain = 0;
      switch (e) {
        case '"':
          plain = '"';
          break;
        case '\\':
          plain = '\\';
          break;
        case '/':
          plain = '/';
          break;
        case 'b':
          plain = '\b';
          break;
        case 'f':
          plain = '\f';
          break;
        case 'n':
          plain = '\n';
          break;
        case 'r':
          plain = '\r';
          break;
        case 't':
          plain = '\t';
          break;
        case 'u': {
          const size_t escape = i_ - 2;
          uint32_t cp;
          if (!Hex4(&cp)) return Error("bad \\u escape (four hex digits expected)");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // A high surrogate must be followed by a low one; a lone one is not a character
            // (it cannot be written as UTF-8), so the record is bad rather than silently altered.
            uint32_t lo = 0;
            const bool pair = s_.substr(i_, 2) == "\\u";
            if (pair) {
              i_ += 2;
              if (!Hex4(&lo)) return Error("bad \\u escape (four hex digits expected)");
            }
            if (!pair || lo < 0xDC00 || lo > 0xDFFF)
              return ErrorAt(escape, absl::StrFormat("lone surrogate \\u%04x (a high surrogate "
                                                     "not followed by a low one)",
                                                     cp));
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return ErrorAt(escape, absl::StrFormat("lone surrogate \\u%04x (a low surrogate "
                                                   "without a high one before it)",
                                                   cp));
          }
          if (out != nullptr) AppendUtf8(cp, out);
          continue;
        }
        default:
          --i_;
          return Error("invalid escape in a string");
      }
      if (out != nullptr) out->push_back(plain);
    }
  }

  absl::Status Array(int depth, JsonValue* out) {
    if (depth > kMaxDepth) return Error("nesting too deep");
    if (out != nullptr) out->type = JsonValue::kArray;
    ++i_;
    SkipSpace();
    if (Peek() == ']') {
      ++i_;
      return absl::OkStatus();
    }
    while (true) {
      JsonValue* item = out != nullptr ? &out->items.emplace_back() : nullptr;
      if (auto st = Value(depth, item); !st.ok()) return st;
      SkipSpace();
      if (Peek() == ',') {
        ++i_;
        continue;
      }
      if (Peek() == ']') {
        ++i_;
        return absl::OkStatus();
      }
      return Error(i_ < s_.size() ? "expected ',' or ']'"
                                  : "unexpected end of line inside an array");
    }
  }

  absl::Status Object(int depth, bool top, JsonValue* out) {
    if (depth > kMaxDepth) return Error("nesting too deep");
    if (out != nullptr) out->type = JsonValue::kObject;
    ++i_;
    SkipSpace();
    if (Peek() == '}') {
      ++i_;
      return absl::OkStatus();
    }
    while (true) {
      SkipSpace();
      if (Peek() != '"')
        return Error(i_ < s_.size() ? "expected a string key"
                                    : "unexpected end of line inside an object");
      std::string key;
      if (auto st = String(&key); !st.ok()) return st;
      SkipSpace();
      if (Peek() != ':') return Error("expected ':' after a key");
      ++i_;
      SkipSpace();
      JsonFieldRequest* wanted = nullptr;
      if (top && fields_ != nullptr)
        for (JsonFieldRequest& f : *fields_)
          if (f.name == key) wanted = &f;
      if (out != nullptr) {
        out->fields.emplace_back(std::move(key), JsonValue());
        if (auto st = Value(depth, &out->fields.back().second); !st.ok()) return st;
      } else if (wanted != nullptr) {
        wanted->found = true;
        wanted->is_string = Peek() == '"';
        wanted->value.clear();
        if (wanted->is_string) {
          if (auto st = String(&wanted->value); !st.ok()) return st;
        } else if (auto st = Value(depth, nullptr); !st.ok()) {
          return st;
        }
      } else if (auto st = Value(depth, nullptr); !st.ok()) {
        return st;
      }
      SkipSpace();
      if (Peek() == ',') {
        ++i_;
        continue;
      }
      if (Peek() == '}') {
        ++i_;
        return absl::OkStatus();
      }
      return Error(i_ < s_.size() ? "expected ',' or '}'"
                                  : "unexpected end of line inside an object");
    }
  }

  std::string_view s_;
  std::vector<JsonFieldRequest>* fields_;
  size_t i_ = 0;
};

}  // namespace

absl::Status ParseJsonObject(std::string_view line, std::vector<JsonFieldRequest>* fields) {
  for (JsonFieldRequest& f : *fields) {
    f.found = f.is_string = false;
    f.value.clear();
  }
  return Parser(line, fields).ParseTop();
}

absl::StatusOr<JsonValue> ParseJson(std::string_view text) {
  JsonValue value;
  if (auto st = Parser(text, nullptr).ParseDocument(&value); !st.ok()) return st;
  return value;
}

const JsonValue* JsonValue::Find(std::string_view key) const {
  const JsonValue* found = nullptr;
  for (const auto& [k, v] : fields)
    if (k == key) found = &v;  // a repeated key: the last one wins, as in ParseJsonObject
  return found;
}

std::string JsonQuote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('"');
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

}  // namespace openmoe
