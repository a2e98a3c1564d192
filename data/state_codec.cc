#include "data/state_codec.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace openmoe {

void StateWriter::Int(const std::string& name, int64_t value) {
  absl::StrAppend(&out_, name, " ", value, "\n");
}
void StateWriter::Uint(const std::string& name, uint64_t value) {
  absl::StrAppend(&out_, name, " ", value, "\n");
}

void StateWriter::Ints(const std::string& name, const std::vector<int32_t>& values) {
  absl::StrAppend(&out_, name, " ", values.size());
  for (int32_t v : values) absl::StrAppend(&out_, " ", v);
  out_ += "\n";
}

void StateWriter::Floats(const std::string& name, const std::vector<float>& values) {
  absl::StrAppend(&out_, name, " ", values.size());
  // Six significant digits round-trip the loss weights the objectives use (0 and 1).
  for (float v : values) absl::StrAppend(&out_, " ", v);
  out_ += "\n";
}

absl::StatusOr<StateReader> StateReader::Parse(const std::string& text, const std::string& what) {
  StateReader r;
  r.what_ = what;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    const std::string name = words[0];
    words.erase(words.begin());
    if (!r.fields_.emplace(name, std::move(words)).second)
      return absl::InvalidArgumentError(absl::StrCat(what, ": field '", name, "' given twice"));
  }
  return r;
}

absl::StatusOr<const std::vector<std::string>*> StateReader::Field(const std::string& name) const {
  auto it = fields_.find(name);
  if (it == fields_.end())
    return absl::InvalidArgumentError(absl::StrCat(what_, ": no field '", name, "'"));
  return &it->second;
}

absl::StatusOr<int64_t> StateReader::Int(const std::string& name) const {
  auto f = Field(name);
  if (!f.ok()) return f.status();
  int64_t v;
  if ((*f)->size() != 1 || !absl::SimpleAtoi((**f)[0], &v))
    return absl::InvalidArgumentError(
        absl::StrCat(what_, ": field '", name, "' is not an integer"));
  return v;
}

absl::StatusOr<uint64_t> StateReader::Uint(const std::string& name) const {
  auto f = Field(name);
  if (!f.ok()) return f.status();
  uint64_t v;
  if ((*f)->size() != 1 || !absl::SimpleAtoi((**f)[0], &v))
    return absl::InvalidArgumentError(
        absl::StrCat(what_, ": field '", name, "' is not an unsigned integer"));
  return v;
}

template <typename T, typename ParseFn>
absl::StatusOr<std::vector<T>> StateReader::CountedList(const std::string& name, ParseFn parse,
                                                        const char* element) const {
  auto f = Field(name);
  if (!f.ok()) return f.status();
  size_t n;
  if ((*f)->empty() || !absl::SimpleAtoi((**f)[0], &n) || (*f)->size() != n + 1)
    return absl::InvalidArgumentError(
        absl::StrCat(what_, ": field '", name, "' is not a counted list"));
  std::vector<T> out(n);
  for (size_t i = 0; i < n; ++i)
    if (!parse((**f)[i + 1], &out[i]))
      return absl::InvalidArgumentError(
          absl::StrCat(what_, ": field '", name, "' has a non-", element));
  return out;
}

absl::StatusOr<std::vector<int32_t>> StateReader::Ints(const std::string& name) const {
  return CountedList<int32_t>(
      name, [](absl::string_view s, int32_t* v) { return absl::SimpleAtoi(s, v); }, "integer");
}

absl::StatusOr<std::vector<float>> StateReader::Floats(const std::string& name) const {
  return CountedList<float>(
      name, [](absl::string_view s, float* v) { return absl::SimpleAtof(s, v); }, "number");
}

}  // namespace openmoe
