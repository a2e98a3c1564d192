// Checksum64: a fast 64-bit checksum for shard files and tokenizer models (not cryptographic).
//
// FNV-1a over 8-byte little-endian words (then the tail bytes one by one), with a final mix.
// Stable across builds and machines; written in token-shard indexes as 16 hex digits.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace openmoe {

class Checksum64 {
 public:
  void Update(std::string_view bytes);
  uint64_t Digest() const;

 private:
  uint64_t state_ = 0xcbf29ce484222325ull;
  uint64_t length_ = 0;
  std::string tail_;  // < 8 bytes not yet folded in
};

uint64_t ComputeChecksum64(std::string_view bytes);
// 16 lowercase hex digits.
std::string ChecksumHex(uint64_t checksum);

}  // namespace openmoe
