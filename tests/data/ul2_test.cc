// UL2 statistics over many samples, against each configuration of the OpenMoE mixture.
//
// Tolerances: with chunks of ~400-500 tokens (rows of 512), T5's rounding of noise tokens and
// span counts moves the realised corruption rate by < 0.5 / L per example and the mean span
// length by < 7% for (64, .5) (250 noise tokens in round(250/64) = 4 spans -> 62.5); so the
// tests ask for |rate - r| < 0.01 and |mean span - mu| / mu < 0.07.
#include "data/ul2.h"

#include <cmath>
#include <map>

#include "gtest/gtest.h"
#include "tests/data/fixtures.h"

namespace openmoe {
namespace {

constexpr int64_t kSeqLen = 512;

struct Parsed {
  std::vector<int32_t> inputs, targets;  // z split by the loss weights
  bool ok = true;
};

// Splits an example into inputs and targets and checks its decoder-only form.
Parsed Parse(const Example& e, int32_t eos) {
  Parsed p;
  EXPECT_EQ(e.tokens[0], eos);
  for (int64_t i = 0; i + 1 < e.size(); ++i) EXPECT_EQ(e.tokens[i + 1], e.targets[i]);
  int64_t k = 0;
  while (k < e.size() && e.weights[k] == 0.0f) ++k;
  for (int64_t i = k; i < e.size(); ++i)
    EXPECT_EQ(e.weights[i], 1.0f) << "weights: a 0-run then a 1-run";
  p.inputs.assign(e.targets.begin(), e.targets.begin() + k);
  p.targets.assign(e.targets.begin() + k, e.targets.end());
  EXPECT_FALSE(p.inputs.empty());
  EXPECT_FALSE(p.targets.empty());
  if (p.inputs.empty() || p.targets.empty()) p.ok = false;
  EXPECT_EQ(p.inputs.back(), eos);
  EXPECT_EQ(p.targets.back(), eos);
  return p;
}

class Ul2Test : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tok = Tokenizer::Load(testing::TinyTokenizerPath(), 100);
    ASSERT_TRUE(tok.ok());
    tok_ = *tok;
    const CounterRng rng(7, 7);
    for (int i = 0; i < 20000; ++i)
      doc_.push_back(
          10 + static_cast<int32_t>(rng.UniformInt(i, 300)));  // above the special and mode ids
  }
  std::unique_ptr<Objective> Make(const std::vector<Ul2Denoiser>& denoisers) {
    DataConfig d;
    d.set_objective(OBJECTIVE_UL2);
    for (const auto& x : denoisers) *d.mutable_ul2()->add_denoisers() = x;
    auto o = MakeObjective(d, *tok_, kSeqLen);
    EXPECT_TRUE(o.ok()) << o.status();
    return o.ok() ? std::move(*o) : nullptr;
  }
  bool IsSentinel(int32_t t) const { return t >= tok_->pieces(); }
  std::shared_ptr<const Tokenizer> tok_;
  std::vector<int32_t> doc_;
};

TEST_F(Ul2Test, SpanCorruptionMatchesEachConfiguration) {
  const auto defaults = DefaultUl2Denoisers();
  for (const Ul2Denoiser& config : defaults) {
    if (config.prefix_lm()) continue;
    auto objective = Make({config});
    ASSERT_NE(objective, nullptr);
    const int32_t mode = (*tok_->ModeTokens(config.mode()))[0];
    int64_t noise_total = 0, spans_total = 0, length_total = 0;
    std::map<int64_t, int64_t> span_lengths;
    for (uint64_t key = 0; key < 600; ++key) {
      const int64_t start = static_cast<int64_t>(key * 17 % 10000);
      int64_t offset = start;
      Example e;
      objective->Next(doc_, &offset, key, &e);
      ASSERT_LE(e.size(), kSeqLen);
      const Parsed p = Parse(e, tok_->eos_id());
      ASSERT_TRUE(p.ok);
      ASSERT_EQ(p.inputs[0], mode) << "mode token first";
      // Sentinels count down from the top id, in the same order in inputs and targets.
      std::vector<int32_t> in_sentinels, out_sentinels;
      for (size_t i = 1; i < p.inputs.size(); ++i)
        if (IsSentinel(p.inputs[i])) in_sentinels.push_back(p.inputs[i]);
      for (int32_t t : p.targets)
        if (IsSentinel(t)) out_sentinels.push_back(t);
      ASSERT_EQ(in_sentinels, out_sentinels);
      ASSERT_FALSE(in_sentinels.empty());
      for (size_t i = 0; i < in_sentinels.size(); ++i)
        EXPECT_EQ(in_sentinels[i], tok_->Sentinel(i));
      EXPECT_EQ(p.targets[0], tok_->Sentinel(0)) << "targets start with the first sentinel";
      // Putting the spans back where their sentinels are gives the chunk exactly.
      std::vector<std::vector<int32_t>> spans;
      for (size_t i = 0; i + 1 < p.targets.size(); ++i) {
        if (IsSentinel(p.targets[i]))
          spans.emplace_back();
        else
          spans.back().push_back(p.targets[i]);
      }
      std::vector<int32_t> rebuilt;
      size_t s = 0;
      for (size_t i = 1; i + 1 < p.inputs.size(); ++i) {
        if (IsSentinel(p.inputs[i])) {
          rebuilt.insert(rebuilt.end(), spans[s].begin(), spans[s].end());
          ++s;
        } else {
          rebuilt.push_back(p.inputs[i]);
        }
      }
      ASSERT_EQ(rebuilt, std::vector<int32_t>(doc_.begin() + start, doc_.begin() + offset));
      for (const auto& sp : spans) {
        ASSERT_FALSE(sp.empty());
        ++span_lengths[static_cast<int64_t>(sp.size())];
        noise_total += static_cast<int64_t>(sp.size());
      }
      spans_total += static_cast<int64_t>(spans.size());
      length_total += offset - start;
    }
    const double rate = static_cast<double>(noise_total) / static_cast<double>(length_total);
    const double mean_span = static_cast<double>(noise_total) / static_cast<double>(spans_total);
    EXPECT_NEAR(rate, config.noise_density(), 0.01) << config.ShortDebugString();
    EXPECT_NEAR(mean_span / config.mean_span_length(), 1.0, 0.07) << config.ShortDebugString();
    EXPECT_GT(span_lengths.size(), 3u) << "span lengths vary";
    // Rows are filled: chunks are as long as seq_len allows.
    EXPECT_GT(static_cast<double>(length_total) / 600, 0.7 * kSeqLen);
  }
}

TEST_F(Ul2Test, PrefixLmSplitsUniformly) {
  auto objective = Make({DefaultUl2Denoisers()[0]});
  const int32_t s2s = (*tok_->ModeTokens("[S2S]"))[0];
  double fraction = 0;
  int64_t lo = 1 << 30, hi = 0;
  const int n = 2000;
  for (int key = 0; key < n; ++key) {
    int64_t offset = 0;
    Example e;
    objective->Next(doc_, &offset, key, &e);
    const Parsed p = Parse(e, tok_->eos_id());
    ASSERT_EQ(p.inputs[0], s2s);
    const int64_t split = static_cast<int64_t>(p.inputs.size()) - 2;  // minus mode and EOS
    const int64_t length = split + static_cast<int64_t>(p.targets.size()) - 1;
    EXPECT_EQ(length, offset);
    for (int32_t t : p.targets) EXPECT_FALSE(IsSentinel(t));
    std::vector<int32_t> rebuilt(p.inputs.begin() + 1, p.inputs.end() - 1);
    rebuilt.insert(rebuilt.end(), p.targets.begin(), p.targets.end() - 1);
    ASSERT_EQ(rebuilt, std::vector<int32_t>(doc_.begin(), doc_.begin() + offset));
    fraction += static_cast<double>(split) / static_cast<double>(length);
    lo = std::min(lo, split);
    hi = std::max(hi, split);
  }
  EXPECT_NEAR(fraction / n, 0.5, 0.02);
  EXPECT_LE(lo, 5);
  EXPECT_GE(hi, kSeqLen - 10);
}

TEST_F(Ul2Test, DefaultMixtureRates) {
  auto objective = Make({});
  std::map<int32_t, int> counts;
  const int n = 5000;
  for (int key = 0; key < n; ++key) {
    int64_t offset = 0;
    Example e;
    objective->Next(doc_, &offset, key, &e);
    ++counts[e.targets[0]];  // the mode token is the first input
  }
  EXPECT_NEAR(counts[(*tok_->ModeTokens("[S2S]"))[0]] / double(n), 0.5, 0.025);
  EXPECT_NEAR(counts[(*tok_->ModeTokens("[NLU]"))[0]] / double(n), 0.2, 0.02);
  EXPECT_NEAR(counts[(*tok_->ModeTokens("[NLG]"))[0]] / double(n), 0.3, 0.025);
}

TEST_F(Ul2Test, ShortDocumentsMakeShortExamples) {
  auto objective = Make({});
  for (int len : {1, 2, 3, 10}) {
    const std::vector<int32_t> doc(doc_.begin(), doc_.begin() + len);
    for (int key = 0; key < 50; ++key) {
      int64_t offset = 0;
      Example e;
      objective->Next(doc, &offset, key, &e);
      EXPECT_EQ(offset, len);
      Parse(e, tok_->eos_id());
      int64_t doc_tokens = 0;
      for (int32_t t : e.targets) doc_tokens += t >= 10 && t < 310;
      EXPECT_EQ(doc_tokens, len) << "every document token once, in inputs or targets";
    }
  }
}

TEST_F(Ul2Test, SameKeySameExample) {
  auto objective = Make({});
  Example a, b;
  int64_t oa = 100, ob = 100;
  objective->Next(doc_, &oa, 12345, &a);
  objective->Next(doc_, &ob, 12345, &b);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.weights, b.weights);
}

TEST(Ul2Spans, RandomSegmentationIsAComposition) {
  const CounterRng rng(1, 2);
  for (int64_t n : {1, 2, 7, 100}) {
    for (int64_t k = 1; k <= n; k += std::max<int64_t>(1, n / 5)) {
      const auto parts = Ul2Objective::RandomSegmentation(n, k, rng, 99);
      ASSERT_EQ(static_cast<int64_t>(parts.size()), k);
      int64_t sum = 0;
      for (int64_t p : parts) {
        EXPECT_GE(p, 1);
        sum += p;
      }
      EXPECT_EQ(sum, n);
    }
  }
}

TEST(Ul2Spans, CountsFollowT5) {
  int64_t noise, spans;
  Ul2Objective::SpanCounts(512, 0.15, 3, &noise, &spans);
  EXPECT_EQ(noise, 77);  // round(76.8)
  EXPECT_EQ(spans, 26);  // round(25.67)
  Ul2Objective::SpanCounts(10, 0.5, 64, &noise, &spans);
  EXPECT_EQ(noise, 5);
  EXPECT_EQ(spans, 1);
}

TEST(CausalLm, ChunksAreShiftedPairsWithEosAroundTheDocument) {
  const CausalLmObjective objective(/*eos_id=*/1, /*seq_len=*/4);
  const std::vector<int32_t> doc = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
  std::vector<int32_t> tokens, targets;
  int64_t offset = 0;
  std::vector<int64_t> sizes;
  while (!objective.Exhausted(doc, offset)) {
    Example e;
    objective.Next(doc, &offset, 0, &e);
    sizes.push_back(e.size());
    tokens.insert(tokens.end(), e.tokens.begin(), e.tokens.end());
    targets.insert(targets.end(), e.targets.begin(), e.targets.end());
    for (float w : e.weights) EXPECT_EQ(w, 1.0f);
  }
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 3}));
  EXPECT_EQ(tokens, (std::vector<int32_t>{1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}));
  EXPECT_EQ(targets, (std::vector<int32_t>{10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 1}));
}

}  // namespace
}  // namespace openmoe
