// core/io/zstd.h: the streaming compressor and decompressor against zstd's one-shot calls (an
// independent route through libzstd), in every split, and damage reported as DataLoss.
#include "core/io/zstd.h"

#include <zstd.h>

#include <algorithm>
#include <string>

#include "gtest/gtest.h"

namespace openmoe {
namespace {

std::string Sample(size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>((i * i / 7 + i) % 61 + 'A'));
  return s;
}

std::string OneShotDecompress(const std::string& frame, size_t size) {
  std::string out(size, '\0');
  const size_t n = ZSTD_decompress(out.data(), out.size(), frame.data(), frame.size());
  return ZSTD_isError(n) ? "<error>" : out.substr(0, n);
}

TEST(ZstdStream, CompressorOutputDecompressesToTheInputForAnySplit) {
  const std::string data = Sample(300000);
  for (size_t piece : {1000, 65536, 300000}) {
    std::string frame;
    ZstdCompressor c({.name = "t", .level = 1, .pledged_size = static_cast<int64_t>(data.size())},
                     [&](std::string_view bytes) {
                       frame.append(bytes);
                       return absl::OkStatus();
                     });
    for (size_t at = 0; at < data.size(); at += piece)
      ASSERT_TRUE(c.Write(std::string_view(data).substr(at, piece)).ok());
    ASSERT_TRUE(c.End().ok());
    EXPECT_EQ(ZSTD_getFrameContentSize(frame.data(), frame.size()), data.size());
    EXPECT_EQ(OneShotDecompress(frame, data.size()), data) << piece;
  }
}

TEST(ZstdStream, SinkErrorIsReturnedAsItIs) {
  ZstdCompressor c({}, [](std::string_view) { return absl::ResourceExhaustedError("disk full"); });
  ASSERT_TRUE(c.Write("abc").ok());  // zstd holds small input
  EXPECT_EQ(c.End(), absl::ResourceExhaustedError("disk full"));
}

TEST(ZstdStream, DecompressorReadsConcatenatedFramesInSmallSteps) {
  const std::string a = Sample(5000), b = Sample(70000);
  const std::string frames = CompressZstd(a) + CompressZstd(b, 5);
  ZstdDecompressor d;
  EXPECT_NE(d.frame_left(), 0u);
  std::string out, chunk(1000, '\0');
  std::string_view in(frames);
  while (!in.empty() || d.frame_left() != 0) {
    std::string_view feed = in.substr(0, 333);
    const size_t before = feed.size();
    auto n = d.Decode(&feed, chunk.data(), chunk.size());
    ASSERT_TRUE(n.ok()) << n.status();
    in.remove_prefix(before - feed.size());
    out.append(chunk.data(), *n);
  }
  EXPECT_EQ(out, a + b);
  auto whole = DecompressZstd(frames, "f");
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(*whole, a + b);
}

TEST(ZstdStream, DamageIsDataLossNamingTheFile) {
  std::string frame = CompressZstd(Sample(100000));
  auto truncated = DecompressZstd(frame.substr(0, frame.size() - 10), "f.zst");
  EXPECT_TRUE(absl::IsDataLoss(truncated.status())) << truncated.status();
  EXPECT_NE(truncated.status().message().find("f.zst: truncated"), std::string::npos);
  frame[0] ^= 0x55;  // the magic number
  auto corrupt = DecompressZstd(frame, "f.zst");
  EXPECT_TRUE(absl::IsDataLoss(corrupt.status())) << corrupt.status();
  EXPECT_NE(corrupt.status().message().find("f.zst: corrupt zstd data near compressed byte"),
            std::string::npos);
  ZstdDecompressor d;
  std::string_view in(frame);
  std::string out(100, '\0');
  EXPECT_TRUE(absl::IsDataLoss(d.Decode(&in, out.data(), out.size()).status()));
  EXPECT_EQ(in.size(), frame.size());  // nothing consumed on error
}

}  // namespace
}  // namespace openmoe
