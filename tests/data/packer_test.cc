#include "data/packer.h"

#include "core/rng.h"
#include "gtest/gtest.h"

namespace openmoe {
namespace {

// Examples of random length 1..max_len whose tokens count up: token j of the stream is j.
class CountingExamples {
 public:
  explicit CountingExamples(int64_t max_len) : max_len_(max_len) {}
  absl::Status Next(Example* e) {
    const int64_t n = 1 + static_cast<int64_t>(rng_.UniformInt(count_++, max_len_));
    for (int64_t i = 0; i < n; ++i) {
      e->tokens.push_back(static_cast<int32_t>(next_));
      e->targets.push_back(static_cast<int32_t>(next_ + 1));
      e->weights.push_back(i % 2 ? 1.0f : 0.0f);
      ++next_;
    }
    return absl::OkStatus();
  }
  int64_t next() const { return next_; }

 private:
  CounterRng rng_{3, 4};
  int64_t max_len_, count_ = 0, next_ = 0;
};

TEST(Packer, NoTokenLostOrDuplicatedAndSegmentsAreContiguous) {
  for (int64_t max_len : {1, 5, 31, 32}) {
    CountingExamples source(max_len);
    Packer packer;
    Batch batch;
    batch.Resize(50, 32);
    for (int64_t r = 0; r < 50; ++r)
      ASSERT_TRUE(packer.FillRow([&](Example* e) { return source.Next(e); }, &batch, r).ok());
    int64_t expect = 0, padding = 0;
    for (int64_t r = 0; r < 50; ++r) {
      int32_t last_segment = 0;
      bool in_padding = false;
      for (int64_t s = 0; s < 32; ++s) {
        const int64_t i = r * 32 + s;
        const int32_t seg = batch.segment_ids[i];
        if (seg == 0) {
          in_padding = true;
          ++padding;
          EXPECT_EQ(batch.loss_weights[i], 0.0f);
          EXPECT_EQ(batch.tokens[i], 0);
          continue;
        }
        EXPECT_FALSE(in_padding) << "padding only at the end of a row";
        EXPECT_TRUE(seg == last_segment || seg == last_segment + 1) << "segments count 1, 2, ...";
        if (s == 0) {
          EXPECT_EQ(seg, 1);
        }
        last_segment = seg;
        EXPECT_EQ(batch.tokens[i], expect) << "the stream, in order, once";
        EXPECT_EQ(batch.targets[i], expect + 1);
        ++expect;
      }
    }
    // Everything pulled is in the rows, except the one example waiting for the next row.
    EXPECT_EQ(expect + (packer.has_pending() ? packer.pending().size() : 0), source.next());
    EXPECT_EQ(packer.padding_tokens(), padding);
    if (max_len == 1) {
      EXPECT_EQ(padding, 0) << "one-token examples fill every row";
    }
  }
}

TEST(Packer, RejectsExamplesLongerThanARow) {
  Packer packer;
  Batch batch;
  batch.Resize(1, 4);
  const absl::Status s = packer.FillRow(
      [](Example* e) {
        e->tokens.assign(5, 1);
        e->targets.assign(5, 1);
        e->weights.assign(5, 1);
        return absl::OkStatus();
      },
      &batch, 0);
  EXPECT_FALSE(s.ok());
}

}  // namespace
}  // namespace openmoe
