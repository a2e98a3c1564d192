// Counter-based random numbers: every value is a pure function of (seed, stream, counter).
//
// Nothing is sequential, so a tensor initialised element by element gives the same values no
// matter how it is sharded over chips or ranks, and a resumed run needs no generator state beyond
// the seed and the step. Streams separate independent uses (one per parameter name, say).
#pragma once

#include <cstdint>
#include <string_view>

namespace openmoe {

// A 64-bit stream id derived from a name (FNV-1a then a finaliser); stable across builds.
uint64_t StreamId(std::string_view name);

class CounterRng {
 public:
  CounterRng(uint64_t seed, uint64_t stream) : key_(Mix(seed) ^ Mix(stream + 0x9e3779b97f4a7c15ull)) {}

  uint64_t Bits(uint64_t counter) const { return Mix(key_ ^ Mix(counter)); }
  // Uniform in [0, 1) with 53 bits of precision.
  double Uniform(uint64_t counter) const;
  // Standard normal (Box-Muller over two sub-counters).
  double Normal(uint64_t counter) const;
  // Standard normal truncated to [-2, 2] (rejection over sub-counters; deterministic per counter).
  double TruncatedNormal(uint64_t counter) const;
  // Uniform integer in [0, n).
  uint64_t UniformInt(uint64_t counter, uint64_t n) const;

  static uint64_t Mix(uint64_t x);

 private:
  uint64_t key_;
};

}  // namespace openmoe
