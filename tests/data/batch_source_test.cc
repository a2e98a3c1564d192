#include "data/batch_source.h"

#include "data/prep.h"
#include "data/synthetic.h"
#include "gtest/gtest.h"
#include "tests/data/fixtures.h"

namespace openmoe {
namespace {

using testing::CorpusJob;
using testing::TempDir;
using testing::WriteOrDie;

std::unique_ptr<BatchSource> MakeOrDie(const JobSpec& spec, int64_t shard, int64_t num_shards) {
  auto s = MakeBatchSource(spec, shard, num_shards);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

Batch NextOrDie(BatchSource* source, int64_t rows, int64_t seq_len) {
  Batch b;
  const absl::Status s = source->Next(rows, seq_len, &b);
  EXPECT_TRUE(s.ok()) << s;
  return b;
}

void ExpectSameBatch(const Batch& a, const Batch& b) {
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.targets, b.targets);
  EXPECT_EQ(a.loss_weights, b.loss_weights);
  EXPECT_EQ(a.segment_ids, b.segment_ids);
}

TEST(SyntheticBatchSource, ShardsConcatenateToTheGlobalBatch) {
  JobSpec spec;
  spec.mutable_model()->set_vocab_size(300);
  spec.mutable_train()->set_seq_len(16);
  const SyntheticMarkovSource markov(300, spec.data().synthetic().branching(),
                                     spec.data().synthetic().seed());
  const int64_t n = 4, rows = 3;
  std::vector<std::unique_ptr<BatchSource>> shards;
  for (int64_t k = 0; k < n; ++k) shards.push_back(MakeOrDie(spec, k, n));
  for (int64_t step = 0; step < 3; ++step) {
    Batch global;
    for (auto& s : shards) global.Append(NextOrDie(s.get(), rows, 16));
    Batch expect;
    markov.FillRows(step * rows * n, rows * n, 16, &expect);
    ExpectSameBatch(global, expect);
  }
  // Resume: a fresh shard 2 restored from shard 2's state continues identically.
  auto fresh = MakeOrDie(spec, 2, n);
  ASSERT_TRUE(fresh->RestoreState(shards[2]->SaveState()).ok());
  ExpectSameBatch(NextOrDie(fresh.get(), rows, 16), NextOrDie(shards[2].get(), rows, 16));
  EXPECT_FALSE(fresh->RestoreState(shards[1]->SaveState()).ok()) << "another shard's state";
}

// Reconstructs the causal-LM document stream from packed rows: the targets of every non-padding
// position, in order, are the documents each followed by EOS.
std::vector<int32_t> TargetStream(const Batch& b) {
  std::vector<int32_t> out;
  for (int64_t i = 0; i < b.num_tokens(); ++i)
    if (b.segment_ids[i] != 0) out.push_back(b.targets[i]);
  return out;
}

class CorpusSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    docs_ = testing::GeneratedDocuments(11, 37);
    WriteOrDie(dir_ / "text.jsonl.zst", CompressZstd(testing::JsonlOf(docs_)));
    auto tok = Tokenizer::Load(testing::TinyTokenizerPath(), 100);
    ASSERT_TRUE(tok.ok());
    tok_ = *tok;
  }
  std::vector<int32_t> DocStream(int64_t shard, int64_t num_shards, int epochs) {
    std::vector<int32_t> out;
    for (int e = 0; e < epochs; ++e)
      for (size_t i = shard; i < docs_.size(); i += num_shards) {
        std::vector<int32_t> ids;
        EXPECT_TRUE(tok_->Encode(docs_[i], &ids).ok());
        out.insert(out.end(), ids.begin(), ids.end());
        out.push_back(tok_->eos_id());
      }
    return out;
  }
  TempDir dir_;
  std::vector<std::string> docs_;
  std::shared_ptr<const Tokenizer> tok_;
};

TEST_F(CorpusSourceTest, CausalLmRowsAreTheDocumentStreamPackedWithSegments) {
  const JobSpec spec = CorpusJob({dir_ / "text.jsonl.zst"}, 32, OBJECTIVE_CAUSAL_LM);
  auto source = MakeOrDie(spec, 0, 1);
  std::vector<int32_t> got;
  for (int step = 0; step < 60; ++step) {
    const Batch b = NextOrDie(source.get(), 4, 32);
    for (int64_t i = 0; i < b.num_tokens(); ++i) {
      // Within a segment, inputs are the targets shifted by one.
      if (i % 32 > 0 && b.segment_ids[i] != 0 && b.segment_ids[i] == b.segment_ids[i - 1]) {
        EXPECT_EQ(b.tokens[i], b.targets[i - 1]);
      }
      if (b.segment_ids[i] != 0) {
        EXPECT_EQ(b.loss_weights[i], 1.0f);
      }
    }
    const auto t = TargetStream(b);
    got.insert(got.end(), t.begin(), t.end());
  }
  const std::vector<int32_t> expect = DocStream(0, 1, 4);
  ASSERT_GT(expect.size(), got.size()) << "the test reads into the next epochs";
  ASSERT_GT(got.size(), DocStream(0, 1, 1).size() * 2);
  EXPECT_EQ(got, std::vector<int32_t>(expect.begin(),
                                      expect.begin() + static_cast<std::ptrdiff_t>(got.size())));
}

TEST_F(CorpusSourceTest, ShardsReadDisjointDocuments) {
  const JobSpec spec = CorpusJob({dir_ / "text.jsonl.zst"}, 32, OBJECTIVE_CAUSAL_LM);
  for (int64_t k = 0; k < 3; ++k) {
    auto source = MakeOrDie(spec, k, 3);
    std::vector<int32_t> got;
    for (int step = 0; step < 10; ++step) {
      const auto t = TargetStream(NextOrDie(source.get(), 4, 32));
      got.insert(got.end(), t.begin(), t.end());
    }
    const std::vector<int32_t> expect = DocStream(k, 3, 6);
    ASSERT_LT(got.size(), expect.size());
    EXPECT_EQ(got, std::vector<int32_t>(expect.begin(),
                                        expect.begin() + static_cast<std::ptrdiff_t>(got.size())))
        << "shard " << k << " reads documents k, k+3, k+6, ...";
  }
}

JobSpec MixtureJob(const TempDir& dir) {
  JobSpec spec = CorpusJob({dir / "text.jsonl.zst"}, 64, OBJECTIVE_UL2);
  SourceConfig* code = spec.mutable_data()->add_sources();
  code->set_name("code");
  code->add_paths(dir / "tree");
  code->set_weight(0.5);
  spec.mutable_data()->set_seed(5);
  return spec;
}

void WriteTree(const TempDir& dir) {
  ASSERT_TRUE(MakeDirectories(dir / "tree/pkg").ok());
  for (int i = 0; i < 9; ++i)
    WriteOrDie(dir / ("tree/pkg/f" + std::to_string(i) + ".py"),
               "def f" + std::to_string(i) + "(x):\n    return x * " + std::to_string(i) + "\n");
}

TEST_F(CorpusSourceTest, ResumeGivesTheSameBatches) {
  WriteTree(dir_);
  for (bool mixture : {false, true}) {
    const JobSpec spec =
        mixture ? MixtureJob(dir_) : CorpusJob({dir_ / "text.jsonl.zst"}, 64, OBJECTIVE_UL2);
    for (int64_t k : {0, 2}) {
      auto a = MakeOrDie(spec, k, 3);
      for (int step = 0; step < 7; ++step) NextOrDie(a.get(), 2, 64);
      const std::string state = a->SaveState();
      std::vector<Batch> expect;
      for (int step = 0; step < 12; ++step) expect.push_back(NextOrDie(a.get(), 2, 64));
      auto b = MakeOrDie(spec, k, 3);
      NextOrDie(b.get(), 2, 64);  // state restored over a used source, too
      ASSERT_TRUE(b->RestoreState(state).ok());
      for (int step = 0; step < 12; ++step)
        ExpectSameBatch(NextOrDie(b.get(), 2, 64), expect[step]);
      EXPECT_EQ(b->SaveState(), a->SaveState());
    }
  }
}

TEST_F(CorpusSourceTest, StateOfAnotherShardOrConfigIsRefused) {
  const JobSpec spec = CorpusJob({dir_ / "text.jsonl.zst"}, 64, OBJECTIVE_UL2);
  auto a = MakeOrDie(spec, 0, 2);
  auto b = MakeOrDie(spec, 1, 2);
  EXPECT_TRUE(absl::IsFailedPrecondition(b->RestoreState(a->SaveState())));
  JobSpec other = spec;
  other.mutable_data()->set_seed(99);
  auto c = MakeOrDie(other, 0, 2);
  EXPECT_TRUE(absl::IsFailedPrecondition(c->RestoreState(a->SaveState())));
  EXPECT_FALSE(c->RestoreState("garbage").ok());
}

TEST_F(CorpusSourceTest, MixtureFollowsTheWeights) {
  WriteTree(dir_);
  JobSpec spec = MixtureJob(dir_);
  spec.mutable_data()->mutable_sources(0)->set_weight(3.0);
  spec.mutable_data()->mutable_sources(1)->set_weight(1.0);
  auto source = MakeOrDie(spec, 0, 1);
  for (int step = 0; step < 100; ++step) NextOrDie(source.get(), 4, 64);
  std::map<std::string, int64_t> c;
  for (auto& [name, value] : source->Counters()) c[name] = value;
  const double text = static_cast<double>(c["data.text.examples"]);
  const double code = static_cast<double>(c["data.code.examples"]);
  EXPECT_NEAR(text / (text + code), 0.75, 0.04);
  EXPECT_GT(c["data.text.documents"], 0);
  EXPECT_GT(c["data.code.documents"], 0);
  EXPECT_EQ(c["data.rows"], 400);
  EXPECT_GT(c["data.loss_tokens"], 0);
}

TEST_F(CorpusSourceTest, TokenShardsGiveTheSameBatchesAsText) {
  PrepOptions prep;
  SourceConfig input;
  input.add_paths(dir_ / "text.jsonl.zst");
  prep.inputs.push_back(input);
  prep.tokenizer_model = testing::TinyTokenizerPath();
  prep.out_dir = dir_ / "shards";
  prep.shard_tokens = 500;  // several shard files
  auto result = RunPrep(prep, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->documents, 37);
  EXPECT_GT(result->shards, 3);
  for (DataObjective objective : {OBJECTIVE_UL2, OBJECTIVE_CAUSAL_LM}) {
    auto text = MakeOrDie(CorpusJob({dir_ / "text.jsonl.zst"}, 48, objective), 1, 2);
    auto shards = MakeOrDie(CorpusJob({dir_ / "shards"}, 48, objective), 1, 2);
    for (int step = 0; step < 25; ++step)
      ExpectSameBatch(NextOrDie(shards.get(), 3, 48), NextOrDie(text.get(), 3, 48));
  }
}

TEST_F(CorpusSourceTest, Ul2RowsHaveLossOnlyOnTargets) {
  const JobSpec spec = CorpusJob({dir_ / "text.jsonl.zst"}, 128, OBJECTIVE_UL2);
  auto source = MakeOrDie(spec, 0, 1);
  const Batch b = NextOrDie(source.get(), 8, 128);
  int64_t loss = 0, real = 0;
  for (int64_t i = 0; i < b.num_tokens(); ++i) {
    real += b.segment_ids[i] != 0;
    loss += b.loss_weights[i] != 0;
    if (b.segment_ids[i] == 0) {
      EXPECT_EQ(b.loss_weights[i], 0.0f);
    }
  }
  EXPECT_GT(loss, 0);
  EXPECT_LT(loss, real) << "inputs carry no loss";
}

}  // namespace
}  // namespace openmoe
