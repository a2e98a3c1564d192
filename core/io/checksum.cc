#include "data/checksum.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace openmoe {
namespace {
constexpr uint64_t kPrime = 0x100000001b3ull;

uint64_t Word(const char* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);  // little-endian machines only (x86-64, aarch64)
  return w;
}
}  // namespace

void Checksum64::Update(std::string_view bytes) {
  length_ += bytes.size();
  if (!tail_.empty()) {
    const size_t take = std::min(bytes.size(), 8 - tail_.size());
    tail_.append(bytes.substr(0, take));
    bytes.remove_prefix(take);
    if (tail_.size() < 8) return;
    state_ = (state_ ^ Word(tail_.data())) * kPrime;
    tail_.clear();
  }
  const char* p = bytes.data();
  size_t n = bytes.size();
  for (; n >= 8; p += 8, n -= 8) state_ = (state_ ^ Word(p)) * kPrime;
  tail_.assign(p, n);
}

uint64_t Checksum64::Digest() const {
  uint64_t h = state_;
  for (unsigned char c : tail_) h = (h ^ c) * kPrime;
  h ^= length_;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

uint64_t ComputeChecksum64(std::string_view bytes) {
  Checksum64 c;
  c.Update(bytes);
  return c.Digest();
}

std::string ChecksumHex(uint64_t checksum) { return absl::StrFormat("%016x", checksum); }

}  // namespace openmoe
