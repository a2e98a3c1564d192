#include "core/rng.h"

#include <cmath>

namespace openmoe {

uint64_t CounterRng::Mix(uint64_t x) {
  // splitmix64's finaliser: a bijection with good avalanche.
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t StreamId(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return CounterRng::Mix(h);
}

double CounterRng::Uniform(uint64_t counter) const {
  return static_cast<double>(Bits(counter) >> 11) * 0x1.0p-53;
}

double CounterRng::Normal(uint64_t counter) const {
  // Sub-counters 2c and 2c+1 feed Box-Muller; u1 is kept away from 0 for the log.
  const double u1 = (static_cast<double>(Bits(2 * counter) >> 11) + 0.5) * 0x1.0p-53;
  const double u2 = Uniform(2 * counter + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

double CounterRng::TruncatedNormal(uint64_t counter) const {
  // Acceptance is ~95%, so 64 tries fail with probability ~1e-83; the fallback keeps it total.
  for (uint64_t attempt = 0; attempt < 64; ++attempt) {
    const double z = Normal(Mix(counter) ^ (attempt * 0x632be59bd9b4e019ull));
    if (std::fabs(z) <= 2.0) return z;
  }
  return 0.0;
}

uint64_t CounterRng::UniformInt(uint64_t counter, uint64_t n) const {
  return static_cast<uint64_t>(Uniform(counter) * static_cast<double>(n)) % n;
}

}  // namespace openmoe
