// LanguageCounts: documents per language of a source with `data.sources.lang_field` (The Stack's
// "lang"), for the data counters "<prefix>lang.<language>.documents".
//
// The counter names are a fixed list (kLanguages below, then "other"), the same for every source
// with a lang_field on every chip and rank: the trainer sums counters by position over chips and
// ranks, so names must not depend on which documents a chip happened to read. A value matches a
// listed language case-insensitively ("Python" -> python); anything else, "" included, is "other".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace openmoe {

class LanguageCounts {
 public:
  // The listed languages, lower case, in counter order ("other" is not among them).
  static const std::vector<std::string>& Languages();

  void Add(std::string_view lang);
  // Appends one counter per listed language, then "<prefix>lang.other.documents".
  void AddCounters(const std::string& prefix,
                   std::vector<std::pair<std::string, int64_t>>* out) const;

 private:
  std::vector<int64_t> counts_ = std::vector<int64_t>(Languages().size() + 1, 0);
};

}  // namespace openmoe
