// `openmoe analyze` end to end: a tiny model trained on two generated sources, two checkpoints,
// analysis.json with every key per MoE layer and the CSVs; the last checkpoint agrees with itself
// exactly; bad input is one line and exit 1. A synthetic-data job is analysed on its own stream.
#include <filesystem>
#include <map>
#include <string>

#include "core/io/json.h"
#include "data/batch_source.h"
#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "tests/data/fixtures.h"
#include "tests/launch/bounded_run.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

TEST(Analyze, TwoCheckpointsGiveEveryKeyPerMoeLayer) {
  testing::TempDir dir;
  testing::WriteOrDie(dir / "a.jsonl", testing::JsonlOf(testing::GeneratedDocuments(1, 80)));
  testing::WriteOrDie(dir / "b.jsonl", testing::JsonlOf(testing::GeneratedDocuments(2, 80)));
  const std::string job = dir / "corpus.pbtxt";
  testing::WriteOrDie(job, "data { source: DATA_CORPUS objective: OBJECTIVE_CAUSAL_LM tokenizer { "
                           "model: \"" + testing::TinyTokenizerPath() +
                               "\" extra_ids: 100 }\n"
                               "sources { name: \"a\" paths: \"" + (dir / "a.jsonl") +
                               "\" }\nsources { name: \"b\" paths: \"" + (dir / "b.jsonl") +
                               "\" } }\n");
  const std::string tiny = std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt";
  const testing::RunLimits limits;
  testing::RunResult train = testing::RunBounded(
      {"train", "--job", tiny, "--job", job, "--set", "train.steps=4", "--set", "train.threads=1",
       "--set", "checkpoint.dir=" + (dir / "ckpt"), "--set", "checkpoint.every_steps=2"},
      limits);
  ASSERT_EQ(train.exit_code, 0) << train.Describe();

  testing::RunResult analyze = testing::RunBounded(
      {"analyze", "--checkpoint", dir / "ckpt/step_00000002", "--checkpoint",
       dir / "ckpt/step_00000004", "--job", tiny, "--job", job, "--rows", "4", "--out",
       dir / "out", "--no_plots"},
      limits);
  ASSERT_EQ(analyze.exit_code, 0) << analyze.Describe();
  EXPECT_NE(analyze.out.find("layer 1: token-id specialisation"), std::string::npos)
      << analyze.out;
  auto parsed = ParseJson(testing::ReadBytes(dir / "out/analysis.json"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->Find("sources")->items.size(), 2u);
  for (const char* key : {"token_specialization", "specialization_control", "domain_expert_share",
                          "drop_by_position", "routing_agreement"}) {
    const JsonValue* v = parsed->Find(key);
    ASSERT_NE(v, nullptr) << key;
    ASSERT_EQ(v->items.size(), 2u) << key;  // tiny's MoE layers 1 and 3
    EXPECT_EQ(v->items[0].Find("layer")->text, "1") << key;
    EXPECT_EQ(v->items[1].Find("layer")->text, "3") << key;
  }
  for (const JsonValue& layer : parsed->Find("token_specialization")->items) {
    const double s = std::stod(layer.Find("value")->text);
    EXPECT_GT(s, 0.25);  // at least the share of the best of 4 experts
    EXPECT_LE(s, 1.0);
    EXPECT_EQ(layer.Find("by_checkpoint")->items.size(), 2u);
    EXPECT_EQ(layer.Find("top_tokens_per_expert")->items.size(), 4u);
  }
  for (const JsonValue& layer : parsed->Find("routing_agreement")->items) {
    EXPECT_EQ(std::stod(layer.Find("token_top1")->items[1].text), 1.0);
    EXPECT_EQ(std::stod(layer.Find("token_id_table")->items[1].text), 1.0);
  }
  for (const JsonValue& layer : parsed->Find("drop_by_position")->items) {
    ASSERT_EQ(layer.Find("by_choice")->items.size(), 2u);  // top-2
    EXPECT_EQ(layer.Find("by_choice")->items[0].items.size(), 10u);
    int64_t tokens = 0;
    for (const JsonValue& t : layer.Find("tokens")->items) tokens += std::stoll(t.text);
    EXPECT_EQ(tokens, 2 * 4 * 64);  // 2 sources x 4 rows x 64 tokens, padding left out
  }
  const JsonValue* shares = parsed->Find("domain_expert_share")->items[0].Find("share");
  double sum = 0;
  for (const JsonValue& x : shares->Find("a")->items) sum += std::stod(x.text);
  EXPECT_NEAR(sum, 1.0, 1e-6);
  for (const char* csv : {"specialization.csv", "routing_agreement.csv", "drop_by_position.csv",
                          "domain_expert_share.csv", "top_tokens.csv", "plots.gp"}) {
    EXPECT_TRUE(std::filesystem::exists(dir / ("out/" + std::string(csv)))) << csv;
  }

  // Bad input: one line naming the problem, exit 1.
  testing::RunResult missing = testing::RunBounded(
      {"analyze", "--checkpoint", dir / "nope", "--job", tiny, "--job", job, "--rows", "4",
       "--out", dir / "out2"},
      limits);
  EXPECT_EQ(missing.exit_code, 1) << missing.Describe();
  ASSERT_EQ(missing.ErrLines().size(), 1u) << missing.Describe();
  EXPECT_NE(missing.err.find("nope"), std::string::npos) << missing.err;
}

// A job that names no source (tiny: synthetic Markov data, no tokenizer) is analysed on its own
// training stream, and says so: the tokens routed are the stream's first --rows rows, as
// MakeBatchSource gives them (the count of ids seen >= --min_count times is recounted here).
TEST(Analyze, SyntheticJobUsesItsTrainingStream) {
  testing::TempDir dir;
  const std::string tiny = std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt";
  const testing::RunLimits limits;
  testing::RunResult train = testing::RunBounded(
      {"train", "--job", tiny, "--set", "train.steps=2", "--set", "train.threads=1", "--set",
       "checkpoint.dir=" + (dir / "ckpt"), "--set", "checkpoint.every_steps=2"},
      limits);
  ASSERT_EQ(train.exit_code, 0) << train.Describe();
  constexpr int64_t kRows = 6, kMinCount = 4;
  testing::RunResult analyze = testing::RunBounded(
      {"analyze", "--checkpoint", dir / "ckpt/step_00000002", "--job", tiny, "--rows",
       std::to_string(kRows), "--min_count", std::to_string(kMinCount), "--out", dir / "out",
       "--no_plots"},
      limits);
  ASSERT_EQ(analyze.exit_code, 0) << analyze.Describe();
  EXPECT_NE(analyze.out.find("names no data.sources or eval.sources: routing 6 rows of its own "
                             "training stream (DATA_SYNTHETIC_MARKOV)"),
            std::string::npos)
      << analyze.out;

  auto job = LoadJob({tiny}, {});
  ASSERT_TRUE(job.ok()) << job.status();
  auto stream = MakeBatchSource(*job, 0, 1);
  ASSERT_TRUE(stream.ok()) << stream.status();
  Batch batch;
  ASSERT_TRUE((*stream)->Next(kRows, job->train().seq_len(), &batch).ok());
  std::map<int32_t, int64_t> counts;
  for (int32_t id : batch.tokens) ++counts[id];
  int64_t frequent = 0;
  for (const auto& [id, count] : counts) frequent += count >= kMinCount;

  auto parsed = ParseJson(testing::ReadBytes(dir / "out/analysis.json"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->Find("sources")->items.size(), 1u);
  EXPECT_EQ(parsed->Find("sources")->items[0].Find("name")->text, "train");
  EXPECT_EQ(parsed->Find("sources")->items[0].Find("rows")->text, std::to_string(kRows));
  for (const JsonValue& layer : parsed->Find("token_specialization")->items) {
    EXPECT_EQ(std::stoll(layer.Find("ids")->text), frequent);
    // No tokenizer: pieces are the ids.
    for (const JsonValue& expert : layer.Find("top_tokens_per_expert")->items)
      for (const JsonValue& t : expert.Find("tokens")->items)
        EXPECT_EQ(t.Find("piece")->text, "<" + t.Find("id")->text + ">");
  }
  for (const JsonValue& layer : parsed->Find("drop_by_position")->items) {
    int64_t tokens = 0;
    for (const JsonValue& t : layer.Find("tokens")->items) tokens += std::stoll(t.text);
    EXPECT_EQ(tokens, kRows * job->train().seq_len());
  }
}

}  // namespace
}  // namespace openmoe
