// XXH64, the project's one checksum (https://github.com/Cyan4973/xxHash, doc/xxhash_spec.md):
// checkpoint tensor files and manifests, token shards, tokenizer models, data fingerprints.
//
// Not cryptographic. Stable across builds and machines (little-endian only: x86-64, aarch64);
// `xxhsum -H64 FILE` prints the seed-0 value of a file. Written in text as 16 hex digits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace openmoe {

// XXH64 of `n` bytes at `data`.
uint64_t Xxh64(const void* data, size_t n, uint64_t seed = 0);
inline uint64_t Xxh64(std::string_view bytes) { return Xxh64(bytes.data(), bytes.size()); }

// XXH64 over bytes fed in pieces: Digest() equals Xxh64 of their concatenation.
class Xxh64Stream {
 public:
  explicit Xxh64Stream(uint64_t seed = 0);
  void Update(const void* data, size_t n);
  uint64_t Digest() const;

 private:
  uint64_t seed_, v_[4];
  uint64_t total_ = 0;
  unsigned char buffer_[32];
  size_t buffered_ = 0;
};

// 16 lowercase hex digits.
std::string ChecksumHex(uint64_t checksum);

}  // namespace openmoe
