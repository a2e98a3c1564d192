// `openmoe score`: .npy input, causal LM rows, the eval capacity factor, padding of the last
// routing group, and the same result from a checkpoint and from its exported safetensors.
#include "launch/score.h"

#include <google/protobuf/text_format.h>

#include <cmath>
#include <sstream>

#include "gtest/gtest.h"
#include "launch/checkpoint/writer.h"
#include "launch/checkpoint/export.h"
#include "model/config.h"
#include "model/decoder.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

using testing::CheckpointJob;
using testing::MakeTrainer;
using testing::ScratchDir;
using testing::WriteBytes;

TokenArray RandomTokens(int64_t rows, int64_t seq_len, int64_t vocab, uint32_t seed) {
  TokenArray t;
  t.rows = rows;
  t.seq_len = seq_len;
  uint32_t x = seed;
  for (int64_t i = 0; i < rows * seq_len; ++i) {
    x = x * 1664525u + 1013904223u;
    t.tokens.push_back(static_cast<int32_t>((x >> 8) % vocab));
  }
  return t;
}

TEST(Npy, RoundTripsInt32AndReadsInt64) {
  ScratchDir dir;
  const TokenArray t = RandomTokens(3, 5, 100, 1);
  ASSERT_TRUE(WriteNpyTokens(dir.Sub("t.npy"), t).ok());
  auto back = ReadNpyTokens(dir.Sub("t.npy"));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->rows, 3);
  EXPECT_EQ(back->seq_len, 5);
  EXPECT_EQ(back->tokens, t.tokens);

  // int64, version 2 header, as numpy writes for large headers.
  std::string header = "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }";
  header.append(64 - (12 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::string bytes = std::string("\x93NUMPY\x02\x00", 8);
  for (int b = 0; b < 4; ++b) bytes += static_cast<char>(header.size() >> (8 * b));
  bytes += header;
  for (int64_t v : {7, 8, 9, 10}) bytes.append(reinterpret_cast<const char*>(&v), 8);
  WriteBytes(dir.Sub("l.npy"), bytes);
  auto wide = ReadNpyTokens(dir.Sub("l.npy"));
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_EQ(wide->tokens, (std::vector<int32_t>{7, 8, 9, 10}));
}

TEST(Npy, BadFilesAreNamed) {
  ScratchDir dir;
  const TokenArray t = RandomTokens(2, 4, 10, 2);
  ASSERT_TRUE(WriteNpyTokens(dir.Sub("t.npy"), t).ok());
  const std::string good = testing::ReadBytes(dir.Sub("t.npy"));
  auto with = [&](std::string from, std::string to) {
    std::string b = good;
    b.replace(b.find(from), from.size(), to);
    return b;
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not numpy at all", "bad magic"},
      {with("'<i4'", "'<f4'"), "'<f4' is not int32"},
      {with("False", "True "), "fortran_order"},
      {with("(2, 4)", "(8,)  "), "is not [rows, seq_len]"},
      {good.substr(0, good.size() - 3), "truncated"},
  };
  for (const auto& [bytes, what] : cases) {
    WriteBytes(dir.Sub("bad.npy"), bytes);
    auto r = ReadNpyTokens(dir.Sub("bad.npy"));
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_NE(r.status().message().find("bad.npy"), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find(what), std::string::npos) << r.status();
  }
}

ScoreOptions Options(const std::string& checkpoint, const std::string& tokens, bool json) {
  ScoreOptions o;
  o.checkpoint = checkpoint;
  o.tokens = tokens;
  o.json = json;
  return o;
}

class Score : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = CheckpointJob(4, 1, 1);  // groups of 16 tokens
    trainer_ = MakeTrainer(spec_);
    for (int i = 0; i < 3; ++i) trainer_->Step();
  }
  JobSpec spec_;
  std::unique_ptr<Trainer> trainer_;
};

// The same numbers as the decoder's forward on the causal LM batch built by hand, in one call.
TEST_F(Score, EqualsOneForwardOnCausalRows) {
  const TokenArray t = RandomTokens(6, 8, 64, 3);
  auto r = ScoreTokens(spec_, trainer_->params().data(), t);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->padded_rows, 0);
  EXPECT_EQ(r->target_tokens, 6 * 7);
  EXPECT_EQ(r->capacity_factor, spec_.router().eval_capacity_factor());

  Batch b;
  b.Resize(6, 8);
  for (int64_t row = 0; row < 6; ++row) {
    for (int64_t s = 0; s < 8; ++s) {
      const int64_t i = row * 8 + s;
      b.tokens[i] = t.tokens[i];
      b.segment_ids[i] = 1;
      if (s < 7) {
        b.targets[i] = t.tokens[i + 1];
        b.loss_weights[i] = 1;
      }
    }
  }
  Decoder decoder(trainer_->layout(), RoutingFromSpec(spec_, /*eval=*/true));
  const DecoderSums sums = decoder.Forward(trainer_->params().data(), b, LossScales{});
  EXPECT_NEAR(r->cross_entropy, sums.lm.cross_entropy / 42, 1e-12);
  EXPECT_NEAR(r->output_z_loss, sums.lm.z_loss / 42, 1e-12);
  const double groups = 48.0 / 16;
  EXPECT_NEAR(r->load_balance_loss, sums.router[1].load_balance / groups, 1e-12);
  EXPECT_NEAR(r->router_z_loss, sums.router[1].z_loss / 48, 1e-12);
  const double expected_loss = r->cross_entropy +
                               spec_.loss().output_z_loss_weight() * r->output_z_loss +
                               spec_.router().aux_loss_weight() * r->load_balance_loss +
                               spec_.router().z_loss_weight() * r->router_z_loss;
  EXPECT_NEAR(r->loss, expected_loss, 1e-12);
}

TEST_F(Score, PadsTheLastGroupWithoutCountingIt) {
  // seq_len 8, groups of 16: rows come in pairs; 5 rows get one padding row.
  const TokenArray t = RandomTokens(5, 8, 64, 4);
  auto r = ScoreTokens(spec_, trainer_->params().data(), t);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->padded_rows, 1);
  EXPECT_EQ(r->target_tokens, 5 * 7);
}

TEST_F(Score, UsesTheEvalCapacityFactor) {
  const TokenArray t = RandomTokens(8, 8, 64, 5);
  spec_.mutable_router()->set_min_capacity(1);
  spec_.mutable_router()->set_eval_capacity_factor(0.25);
  auto tight = ScoreTokens(spec_, trainer_->params().data(), t);
  spec_.mutable_router()->set_eval_capacity_factor(4.0);  // capacity = the whole group: no drops
  auto loose = ScoreTokens(spec_, trainer_->params().data(), t);
  ASSERT_TRUE(tight.ok() && loose.ok());
  EXPECT_GT(tight->drop_fraction, 0.3);
  EXPECT_EQ(loose->drop_fraction, 0.0);
  EXPECT_EQ(loose->fully_dropped_fraction, 0.0);
  ASSERT_EQ(tight->layers.size(), 1u);
  EXPECT_EQ(tight->layers[0].layer, 1);
  EXPECT_GT(tight->drop_fraction_by_choice[1], 0.0);
}

TEST_F(Score, TokenOutsideTheVocabularyIsNamed) {
  TokenArray t = RandomTokens(2, 8, 64, 6);
  t.tokens[11] = 64;
  auto r = ScoreTokens(spec_, trainer_->params().data(), t);
  EXPECT_NE(r.status().message().find("token 64 at row 1, column 3"), std::string::npos)
      << r.status();
}

// The subcommand on a checkpoint and on its export: the same bytes of JSON.
TEST_F(Score, ExportedWeightsScoreLikeTheCheckpoint) {
  ScratchDir dir;
  auto saved = SaveCheckpoint(*trainer_, dir.Sub("ckpt"), 1);
  ASSERT_TRUE(saved.ok());
  ASSERT_TRUE(ExportSafetensors(saved->path, dir.Sub("w.safetensors")).ok());
  ASSERT_TRUE(WriteNpyTokens(dir.Sub("t.npy"), RandomTokens(7, 8, 64, 7)).ok());
  std::ostringstream from_checkpoint, from_file;
  ASSERT_TRUE(RunScore(Options(saved->path, dir.Sub("t.npy"), true), from_checkpoint).ok());
  ASSERT_TRUE(RunScore(Options(dir.Sub("w.safetensors"), dir.Sub("t.npy"), true), from_file).ok());
  EXPECT_EQ(from_checkpoint.str(), from_file.str());
  EXPECT_NE(from_checkpoint.str().find("\"cross_entropy\":"), std::string::npos);
  // And what the in-memory parameters give.
  auto direct = ScoreTokens(spec_, trainer_->params().data(), *ReadNpyTokens(dir.Sub("t.npy")));
  EXPECT_EQ(ScoreJson(*direct) + "\n", from_checkpoint.str());

  // An explicit job of another model is refused, naming the field.
  std::ostringstream ignored;
  const std::string job = dir.Sub("other.pbtxt");
  JobSpec other = spec_;
  other.mutable_model()->set_d_model(32);
  std::string text;
  google::protobuf::TextFormat::PrintToString(other, &text);
  WriteBytes(job, text);
  ScoreOptions with_job = Options(saved->path, dir.Sub("t.npy"), false);
  with_job.job_files = {job};
  const absl::Status s = RunScore(with_job, ignored);
  EXPECT_NE(s.message().find("model.d_model"), std::string::npos) << s;
}

}  // namespace
}  // namespace openmoe
