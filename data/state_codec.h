// Text encoding of iterator state (BatchSource::SaveState): one "name value..." line per field,
// readable in a checkpoint and strict to parse (a missing or malformed field is an error).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace openmoe {

class StateWriter {
 public:
  void Int(const std::string& name, int64_t value);
  void Uint(const std::string& name, uint64_t value);
  void Ints(const std::string& name, const std::vector<int32_t>& values);
  void Floats(const std::string& name, const std::vector<float>& values);
  const std::string& str() const { return out_; }

 private:
  std::string out_;
};

class StateReader {
 public:
  // `what` names the state in errors ("data iterator state").
  static absl::StatusOr<StateReader> Parse(const std::string& text, const std::string& what);
  absl::StatusOr<int64_t> Int(const std::string& name) const;
  absl::StatusOr<uint64_t> Uint(const std::string& name) const;
  absl::StatusOr<std::vector<int32_t>> Ints(const std::string& name) const;
  absl::StatusOr<std::vector<float>> Floats(const std::string& name) const;

 private:
  absl::StatusOr<const std::vector<std::string>*> Field(const std::string& name) const;
  // A field "n v1 .. vn", each value parsed by parse(text, &value); `element` names the type.
  template <typename T, typename ParseFn>
  absl::StatusOr<std::vector<T>> CountedList(const std::string& name, ParseFn parse,
                                             const char* element) const;
  std::string what_;
  std::map<std::string, std::vector<std::string>> fields_;
};

}  // namespace openmoe
