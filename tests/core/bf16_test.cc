// bf16 rounding (core/bf16.h) against hand-computed bit patterns and against an independent
// nearest-even reference written with double arithmetic: ties to even both ways, NaN, +-inf,
// subnormals, the bf16 max and the first value that rounds to inf, -0.0; arrays == scalars.
#include "core/bf16.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace openmoe {
namespace {

float FromBits(uint32_t bits) { return std::bit_cast<float>(bits); }
uint16_t Bf16Of(uint32_t float_bits) { return FloatToBf16(FromBits(float_bits)); }

// Nearest-even by value, not by bit tricks: of the two bf16 neighbours of finite x (truncation and
// the next bf16 away from zero, 2^128 standing in for inf), the nearer in double; on a tie the one
// with an even last bit.
uint16_t ReferenceBf16(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint16_t lo = static_cast<uint16_t>(bits >> 16), hi = static_cast<uint16_t>(lo + 1);
  const double lo_value = std::fabs(static_cast<double>(Bf16ToFloat(lo)));
  const double hi_value = (hi & 0x7FFF) == 0x7F80 ? std::ldexp(1.0, 128)
                                                  : std::fabs(static_cast<double>(Bf16ToFloat(hi)));
  const double ax = std::fabs(static_cast<double>(x));
  const double d_lo = ax - lo_value, d_hi = hi_value - ax;
  if (d_lo < d_hi) return lo;
  if (d_hi < d_lo) return hi;
  return (lo & 1) == 0 ? lo : hi;
}

TEST(Bf16, ExactValuesAreKept) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xC000);
  EXPECT_EQ(FloatToBf16(0.0f), 0x0000);
  EXPECT_EQ(RoundToBf16(1.5f), 1.5f);
  EXPECT_EQ(RoundToBf16(-0.375f), -0.375f);
}

TEST(Bf16, TiesGoToEvenInBothDirections) {
  // 1 + 2^-8 is halfway between 1 (mantissa ...0, even) and 1 + 2^-7 (odd): down to 1.
  EXPECT_EQ(RoundToBf16(1.0f + std::ldexp(1.0f, -8)), 1.0f);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up.
  EXPECT_EQ(RoundToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_EQ(RoundToBf16(-1.0f - std::ldexp(1.0f, -8)), -1.0f);
  EXPECT_EQ(RoundToBf16(-1.0f - 3 * std::ldexp(1.0f, -8)), -1.0f - std::ldexp(1.0f, -6));
  // One float ulp off the tie decides by distance.
  EXPECT_EQ(Bf16Of(0x3F808001), 0x3F81);
  EXPECT_EQ(Bf16Of(0x3F807FFF), 0x3F80);
  EXPECT_EQ(Bf16Of(0x3F818000), 0x3F82);
  EXPECT_EQ(Bf16Of(0x3F817FFF), 0x3F81);
  // A tie whose rounding carries into the exponent: (2 - 2^-8) goes up to 2.
  EXPECT_EQ(RoundToBf16(2.0f - std::ldexp(1.0f, -8)), 2.0f);
}

TEST(Bf16, NanStaysQuietNanWithItsSign) {
  const float qnan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(RoundToBf16(qnan)));
  EXPECT_FALSE(std::signbit(RoundToBf16(qnan)));
  EXPECT_TRUE(std::isnan(RoundToBf16(-qnan)));
  EXPECT_TRUE(std::signbit(RoundToBf16(-qnan)));
  // Signalling NaNs whose payload lives only in the low 16 bits: truncation would give inf.
  EXPECT_EQ(Bf16Of(0x7F800001), 0x7FC0);
  EXPECT_EQ(Bf16Of(0xFF800001), 0xFFC0);
  // Rounding up must not carry a NaN's payload into the sign bit or wrap it.
  EXPECT_EQ(Bf16Of(0x7FFFFFFF), 0x7FFF);
  EXPECT_EQ(Bf16Of(0xFFFFFFFF), 0xFFFF);
  // Upper payload bits are kept.
  EXPECT_EQ(Bf16Of(0x7FA50000), 0x7FE5);
}

TEST(Bf16, InfinitiesStayInfinite) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(FloatToBf16(inf), 0x7F80);
  EXPECT_EQ(FloatToBf16(-inf), 0xFF80);
  EXPECT_EQ(RoundToBf16(inf), inf);
  EXPECT_EQ(RoundToBf16(-inf), -inf);
}

TEST(Bf16, MaxIsKeptAndTheTieAboveRoundsToInf) {
  const float bf16_max = FromBits(0x7F7F0000);
  EXPECT_EQ(bf16_max, std::ldexp(255.0f, 120));  // (2 - 2^-7) * 2^127
  EXPECT_EQ(RoundToBf16(bf16_max), bf16_max);
  EXPECT_EQ(RoundToBf16(-bf16_max), -bf16_max);
  // Halfway between the max (odd mantissa 0x7F) and 2^128: even is up, i.e. inf.
  const float midpoint = FromBits(0x7F7F8000);
  EXPECT_EQ(midpoint, std::ldexp(511.0f, 119));  // (2 - 2^-8) * 2^127
  EXPECT_EQ(FloatToBf16(midpoint), 0x7F80);
  EXPECT_EQ(FloatToBf16(-midpoint), 0xFF80);
  EXPECT_EQ(RoundToBf16(std::nextafter(midpoint, 0.0f)), bf16_max);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7F80);
}

TEST(Bf16, SubnormalsRoundByTheSameRule) {
  // bf16's smallest subnormal is 2^-133 (bits 0x0001). Half of it is a tie: down to even 0.
  EXPECT_EQ(FloatToBf16(std::ldexp(1.0f, -134)), 0x0000);
  EXPECT_EQ(FloatToBf16(std::ldexp(1.0f, -134) + std::ldexp(1.0f, -149)), 0x0001);
  // 3 * 2^-134 is halfway between 2^-133 (odd) and 2^-132 (even): up.
  EXPECT_EQ(RoundToBf16(3 * std::ldexp(1.0f, -134)), std::ldexp(1.0f, -132));
  EXPECT_EQ(FloatToBf16(std::ldexp(1.0f, -133)), 0x0001);
  EXPECT_EQ(FloatToBf16(-std::ldexp(1.0f, -133)), 0x8001);
  // The smallest float subnormal rounds to zero; the largest one up to the smallest normal 2^-126.
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(RoundToBf16(FromBits(0x007FFFFF)), std::numeric_limits<float>::min());
  // Not flushed: a subnormal bf16 survives.
  EXPECT_EQ(RoundToBf16(FromBits(0x00250000)), FromBits(0x00250000));
}

TEST(Bf16, NegativeZeroStaysNegativeZero) {
  EXPECT_EQ(FloatToBf16(-0.0f), 0x8000);
  EXPECT_TRUE(std::signbit(RoundToBf16(-0.0f)));
  EXPECT_EQ(FloatToBf16(-std::numeric_limits<float>::denorm_min()), 0x8000);
}

TEST(Bf16, EveryBf16RoundTripsExactly) {
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(b));
    EXPECT_EQ(std::bit_cast<uint32_t>(f), b << 16);
    if (std::isnan(f)) {
      EXPECT_EQ(FloatToBf16(f), static_cast<uint16_t>(b | 0x0040)) << b;  // quietened
    } else {
      EXPECT_EQ(FloatToBf16(f), b) << b;
    }
  }
}

TEST(Bf16, MatchesTheNearestEvenReferenceOnRandomBitPatterns) {
  std::mt19937 gen(12);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t bits = gen();
    const float x = FromBits(bits);
    if (std::isnan(x)) continue;  // covered above
    ASSERT_EQ(FloatToBf16(x), ReferenceBf16(x)) << std::hex << bits;
  }
  // Every tie and its neighbours within the first few binades and around the top.
  for (const uint32_t hi :
       {0x0000u, 0x0001u, 0x007Fu, 0x3F80u, 0x3F81u, 0x7F7Eu, 0x7F7Fu, 0x8001u, 0xBF80u, 0xFF7Fu}) {
    for (const uint32_t lo : {0x7FFEu, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu}) {
      const float x = FromBits(hi << 16 | lo);
      EXPECT_EQ(FloatToBf16(x), ReferenceBf16(x)) << std::hex << (hi << 16 | lo);
    }
  }
}

// Random values with specials sprinkled in; odd length so vector tails are exercised.
std::vector<float> RandomWithSpecials(int64_t n) {
  std::mt19937 gen(7);
  std::vector<float> x(n);
  for (auto& v : x) v = FromBits(gen());
  const float specials[] = {0.0f,
                            -0.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            FromBits(0x7F800001),
                            FromBits(0xFF800001),
                            FromBits(0x7F7F8000),
                            FromBits(0x00008000),
                            FromBits(0x007FFFFF),
                            std::numeric_limits<float>::max(),
                            1.0f + 0x1p-8f};
  for (size_t i = 0; i < std::size(specials); ++i) x[i * 37 % n] = specials[i];
  return x;
}

TEST(Bf16, ArrayVersionsEqualTheScalarOnes) {
  for (const int64_t n : {int64_t{1}, int64_t{15}, int64_t{17}, int64_t{1000003}}) {
    const std::vector<float> x = RandomWithSpecials(n);
    std::vector<uint16_t> packed(n);
    FloatToBf16(x.data(), packed.data(), n);
    std::vector<float> rounded(n), unpacked(n);
    RoundToBf16(x.data(), rounded.data(), n);
    Bf16ToFloat(packed.data(), unpacked.data(), n);
    std::vector<float> in_place = x;
    RoundToBf16(in_place.data(), in_place.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t want = FloatToBf16(x[i]);
      ASSERT_EQ(packed[i], want) << i;
      ASSERT_EQ(std::bit_cast<uint32_t>(rounded[i]), uint32_t{want} << 16) << i;
      ASSERT_EQ(std::bit_cast<uint32_t>(unpacked[i]), uint32_t{want} << 16) << i;
      ASSERT_EQ(std::bit_cast<uint32_t>(in_place[i]), uint32_t{want} << 16) << i;
    }
  }
}

TEST(Bf16, CpuCheckAgreesWithProcCpuinfo) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  if (!cpuinfo) GTEST_SKIP() << "no /proc/cpuinfo";
  std::string line;
  bool flag = false;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line);
    for (std::string word; words >> word;) flag = flag || word == "avx512_bf16";
    break;
  }
  EXPECT_EQ(CpuHasAvx512Bf16(), flag);
}

}  // namespace
}  // namespace openmoe
