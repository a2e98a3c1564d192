// XXH64 (core/io/checksum.h) against published values and against zstd's own frame checksum
// (the low 32 bits of XXH64), one-shot and streamed.
#include "core/io/checksum.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "gtest/gtest.h"

namespace openmoe {
namespace {

TEST(Xxh64, MatchesPublishedValues) {
  EXPECT_EQ(Xxh64("", 0), 0xEF46DB3751D8E999ull);
  EXPECT_EQ(Xxh64("a", 1), 0xD24EC4F1A98C6E5Bull);
  EXPECT_EQ(Xxh64("abc", 3), 0x44BC2CF5AD770999ull);
}

// zstd stores the low 32 bits of XXH64(content, seed 0) at the end of a frame with checksums on:
// an independent implementation to compare against, for every length class (< 4, < 8, < 32, long).
TEST(Xxh64, LowBitsMatchZstdFrameChecksum) {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  std::string data;
  for (int i = 0; i < 1000; ++i) data += static_cast<char>((i * 7919) % 251);
  for (size_t n : {1, 3, 4, 7, 8, 15, 31, 32, 33, 63, 64, 100, 1000}) {
    std::string frame(ZSTD_compressBound(n), '\0');
    const size_t size = ZSTD_compress2(cctx, frame.data(), frame.size(), data.data(), n);
    ASSERT_FALSE(ZSTD_isError(size));
    uint32_t stored;
    std::memcpy(&stored, frame.data() + size - 4, 4);
    EXPECT_EQ(static_cast<uint32_t>(Xxh64(data.data(), n)), stored) << "length " << n;
  }
  ZSTD_freeCCtx(cctx);
}

TEST(Xxh64, StreamEqualsOneShotForAnySplit) {
  std::string data;
  for (int i = 0; i < 3000; ++i) data += static_cast<char>((i * 131) % 256);
  for (size_t n : {0, 5, 31, 32, 33, 100, 3000}) {
    for (size_t piece : {1, 3, 7, 32, 45, 1000}) {
      Xxh64Stream stream;
      for (size_t at = 0; at < n; at += piece)
        stream.Update(data.data() + at, std::min(piece, n - at));
      EXPECT_EQ(stream.Digest(), Xxh64(data.data(), n)) << n << " in pieces of " << piece;
    }
  }
}

TEST(ChecksumHex, SixteenLowercaseDigits) {
  EXPECT_EQ(ChecksumHex(0), "0000000000000000");
  EXPECT_EQ(ChecksumHex(0x44BC2CF5AD770999ull), "44bc2cf5ad770999");
  EXPECT_EQ(Xxh64(std::string_view("abc")), 0x44BC2CF5AD770999ull);
}

}  // namespace
}  // namespace openmoe
