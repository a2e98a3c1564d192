// Held-out rows (data/heldout_rows.h): the prefix-LM rows against hand-written rows, and against
// the training objective itself: a full chunk's row is the UL2 prefix-LM training example of that
// chunk split at the same point, with the loss on the same positions but the final EOS.
#include "data/heldout_rows.h"

#include <numeric>
#include <vector>

#include "data/ul2.h"
#include "gtest/gtest.h"

namespace openmoe {
namespace {

constexpr int32_t kEos = 1, kMode = 3;

std::vector<int32_t> Iota(int64_t n, int32_t first) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

TEST(HeldOutRows, CausalIsTheEosSeparatedStream) {
  const HeldOutRowMaker maker(RowForm::kCausalLm, kEos, {kMode}, 8);
  std::vector<int32_t> out;
  maker.Add({10, 11, 12}, &out);
  maker.Add({20}, &out);
  EXPECT_EQ(out, (std::vector<int32_t>{kEos, 10, 11, 12, kEos, 20}));
}

TEST(HeldOutRows, PrefixLmRowsByHand) {
  // seq_len 10, one mode token: chunks of at most 10 - 1 - 2 = 7 tokens, split at l / 2.
  const HeldOutRowMaker maker(RowForm::kPrefixLm, kEos, {kMode}, 10);
  std::vector<int32_t> out;
  maker.Add(Iota(16, 100), &out);  // chunks of 7, 7 and 2
  maker.Add({50}, &out);           // too short for a prefix and a continuation: no row
  const std::vector<int32_t> want = {
      kEos, kMode, 100, 101,  102, kEos, 103,  104,  105,  106,    // u = 3
      kEos, kMode, 107, 108,  109, kEos, 110,  111,  112,  113,    //
      kEos, kMode, 114, kEos, 115, kEos, kEos, kEos, kEos, kEos};  // u = 1, EOS padding
  EXPECT_EQ(out, want);

  int64_t begin = 0, end = 0;
  ASSERT_TRUE(PrefixLmLossSpan(want.data(), 10, &begin, &end));
  EXPECT_EQ(begin, 5);  // the EOS ending the prefix predicts 103
  EXPECT_EQ(end, 9);    // positions 5..8 predict 103..106; 9 has no target in the row
  ASSERT_TRUE(PrefixLmLossSpan(want.data() + 20, 10, &begin, &end));
  EXPECT_EQ(begin, 3);  // predicts 115
  EXPECT_EQ(end, 4);    // 115 -> EOS does not count; positions from 5 on are padding
  const std::vector<int32_t> causal = {kEos, 10, 11, 12, 13, 14, 15, 16, 17, 18};
  EXPECT_FALSE(PrefixLmLossSpan(causal.data(), 10, &begin, &end));
}

TEST(HeldOutRows, AFullPrefixLmRowIsTheTrainingExampleOfItsChunk) {
  constexpr int64_t kSeqLen = 32;
  Ul2DenoiserSpec s2s;
  s2s.prefix_lm = true;
  s2s.mode = {kMode};
  auto ul2 =
      Ul2Objective::Create({s2s}, kEos, /*top_sentinel=*/499, /*max_sentinels=*/100, kSeqLen);
  ASSERT_TRUE(ul2.ok()) << ul2.status();
  const int64_t chunk = (*ul2)->denoisers()[0].max_chunk;
  const std::vector<int32_t> doc = Iota(chunk, 100);
  std::vector<int32_t> row;
  HeldOutRowMaker(RowForm::kPrefixLm, kEos, {kMode}, kSeqLen).Add(doc, &row);
  ASSERT_EQ(static_cast<int64_t>(row.size()), kSeqLen);  // the row holds the whole chunk
  int64_t begin = 0, end = 0;
  ASSERT_TRUE(PrefixLmLossSpan(row.data(), kSeqLen, &begin, &end));

  // The training example whose random split is the row's (chunk / 2).
  Example e;
  bool found = false;
  for (uint64_t key = 0; key < 10000 && !found; ++key) {
    int64_t offset = 0;
    (*ul2)->Next(doc, &offset, key, &e);
    found = e.weights[begin] == 1.0f && e.weights[begin - 1] == 0.0f;
  }
  ASSERT_TRUE(found);
  EXPECT_EQ(e.tokens, row);
  for (int64_t i = 0; i + 1 < kSeqLen; ++i) {
    EXPECT_EQ(e.targets[i], row[i + 1]) << i;
    EXPECT_EQ(e.weights[i], i >= begin && i < end ? 1.0f : 0.0f) << i;
  }
  EXPECT_EQ(e.targets[kSeqLen - 1], kEos);  // the final EOS: in training, not in the row
}

}  // namespace
}  // namespace openmoe
