#include "data/language_counts.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace openmoe {

const std::vector<std::string>& LanguageCounts::Languages() {
  // The Stack's most common languages and those LanguageOfPath names (data/document_reader.h).
  static const std::vector<std::string>* const kLanguages = new std::vector<std::string>{
      "c", "c++", "c#", "go", "java", "javascript", "typescript", "python", "rust", "ruby",
      "php", "perl", "shell", "lua", "scala", "haskell", "sql", "html", "css", "markdown"};
  return *kLanguages;
}

void LanguageCounts::Add(std::string_view lang) {
  const std::string lower = absl::AsciiStrToLower(std::string(lang));
  const std::vector<std::string>& names = Languages();
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == lower) {
      ++counts_[i];
      return;
    }
  }
  ++counts_.back();
}

void LanguageCounts::AddCounters(const std::string& prefix,
                                 std::vector<std::pair<std::string, int64_t>>* out) const {
  const std::vector<std::string>& names = Languages();
  for (size_t i = 0; i < names.size(); ++i)
    out->push_back({absl::StrCat(prefix, "lang.", names[i], ".documents"), counts_[i]});
  out->push_back({absl::StrCat(prefix, "lang.other.documents"), counts_.back()});
}

}  // namespace openmoe
