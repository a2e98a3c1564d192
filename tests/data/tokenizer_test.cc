#include "data/tokenizer.h"

#include "gtest/gtest.h"
#include "tests/data/fixtures.h"

namespace openmoe {
namespace {

using testing::TinyTokenizerPath;

TEST(Tokenizer, TrainsLoadsAndRoundTripsText) {
  auto tok = Tokenizer::Load(TinyTokenizerPath(), 100);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->pieces(), 400);
  EXPECT_EQ((*tok)->vocab_size(), 500);
  EXPECT_EQ((*tok)->eos_id(), 1);
  const std::string text =
      "The router learns which expert fits best.\n  Tokens flow through shards.";
  std::vector<int32_t> ids;
  ASSERT_TRUE((*tok)->Encode(text, &ids).ok());
  EXPECT_GT(ids.size(), 5u);
  for (int32_t id : ids) EXPECT_LT(id, 400);
  auto back = (*tok)->Decode(ids);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, text);
}

TEST(Tokenizer, NewlinesAndIndentationSurvive) {
  auto tok = Tokenizer::Load(TinyTokenizerPath(), 100);
  ASSERT_TRUE(tok.ok());
  const std::string code = "def f(x):\n    return x + 1\n\n\tif x:\n        pass\n";
  std::vector<int32_t> ids;
  ASSERT_TRUE((*tok)->Encode(code, &ids).ok());
  EXPECT_EQ(*(*tok)->Decode(ids), code);
}

TEST(Tokenizer, UnseenCharactersFallBackToBytes) {
  auto tok = Tokenizer::Load(TinyTokenizerPath(), 100);
  ASSERT_TRUE(tok.ok());
  const std::string text = "Zürich ∑ 漢字 {}";
  std::vector<int32_t> ids;
  ASSERT_TRUE((*tok)->Encode(text, &ids).ok());
  EXPECT_EQ(*(*tok)->Decode(ids), text);
}

TEST(Tokenizer, SentinelsCountDownFromTheTop) {
  auto tok = Tokenizer::Load(TinyTokenizerPath(), 100);
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ((*tok)->Sentinel(0), 499);
  EXPECT_EQ((*tok)->Sentinel(99), 400);
  EXPECT_EQ((*tok)->IdToPiece(499), "<extra_id_0>");
  EXPECT_EQ(*(*tok)->Decode({499, 498}), "<extra_id_0><extra_id_1>");
}

TEST(Tokenizer, ModeMarkersAreSinglePieces) {
  auto tok = Tokenizer::Load(TinyTokenizerPath(), 100);
  ASSERT_TRUE(tok.ok());
  for (const char* mode : {"[S2S]", "[NLU]", "[NLG]"}) {
    auto ids = (*tok)->ModeTokens(mode);
    ASSERT_TRUE(ids.ok());
    ASSERT_EQ(ids->size(), 1u) << mode;
    EXPECT_EQ((*tok)->IdToPiece((*ids)[0]), mode);
  }
  // A marker the model lacks is encoded as text.
  auto other = (*tok)->ModeTokens("[XYZ]");
  ASSERT_TRUE(other.ok());
  EXPECT_GT(other->size(), 1u);
}

TEST(Tokenizer, TrainingIsDeterministic) {
  TokenizerTrainingOptions options;
  options.vocab_size = 350;
  options.threads = 1;
  const auto docs = testing::GeneratedDocuments(5, 100);
  auto a = TrainTokenizer(docs, options);
  auto b = TrainTokenizer(docs, options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

TEST(Tokenizer, TrainingSentencesAreSampledDeterministically) {
  TokenizerTrainingOptions options;
  options.max_sentences = 50;
  const auto docs = testing::GeneratedDocuments(6, 200);
  const auto a = TrainingSentences(docs, options);
  EXPECT_EQ(a.size(), 50u);
  EXPECT_EQ(a, TrainingSentences(docs, options));
}

TEST(Tokenizer, MissingAndBogusModelsAreClearErrors) {
  auto missing = Tokenizer::Load("/nonexistent/x.model", 100);
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_NE(missing.status().message().find("/nonexistent/x.model"), std::string::npos);
  auto bogus = Tokenizer::FromSerialized("not a model", 100, "bogus.model");
  EXPECT_FALSE(bogus.ok());
  EXPECT_NE(bogus.status().message().find("bogus.model"), std::string::npos);
}

}  // namespace
}  // namespace openmoe
