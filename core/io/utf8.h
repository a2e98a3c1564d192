// Strict UTF-8 validation (RFC 3629): no overlong forms, no encoded surrogates (U+D800..DFFF),
// nothing above U+10FFFF, no truncated sequence. Corpora must be valid UTF-8: sentencepiece and
// every consumer downstream assume it, and a bad byte is usually a sign of a damaged record.
#pragma once

#include <cstddef>
#include <string_view>

namespace openmoe {

// The length (1-4) of the valid UTF-8 sequence at s[i], or 0 when the bytes there are not one.
// Requires i < s.size().
size_t Utf8SequenceLength(std::string_view s, size_t i);

// The offset of the first byte that is not valid UTF-8, or std::string_view::npos when `s` is.
size_t FindInvalidUtf8(std::string_view s);

}  // namespace openmoe
