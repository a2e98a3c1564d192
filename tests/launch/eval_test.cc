// Eval during training equals `openmoe score` on the same tokens and weights: in process (the
// Evaluator on a trainer's mesh vs ScoreTokens of its parameters) and end to end (`openmoe train`
// under mpirun -np 2 with expert parallelism across the ranks, its metrics' eval record at step N
// vs `openmoe score` of checkpoint step_N on the rows `openmoe prep --npy` writes).
#include "launch/evaluator.h"

#include <cmath>
#include <map>

#include "absl/strings/str_split.h"
#include "core/io/json.h"
#include "data/prep.h"
#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "launch/source_rows.h"
#include "model/config.h"
#include "tests/data/fixtures.h"
#include "tests/launch/bounded_run.h"
#include "tests/launch/child_process.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

constexpr int kUl2Steps = 80;

// The tiny job with eval over a generated jsonl corpus tokenized by the tiny tokenizer.
JobSpec TinyWithEval(const std::string& jsonl, int64_t rows) {
  auto spec = LoadJob({std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt"}, {});
  EXPECT_TRUE(spec.ok()) << spec.status();
  JobSpec s = *spec;
  s.mutable_data()->mutable_tokenizer()->set_model(testing::TinyTokenizerPath());
  s.mutable_data()->mutable_tokenizer()->set_extra_ids(100);
  s.mutable_eval()->set_every_steps(2);
  s.mutable_eval()->set_rows(rows);
  SourceConfig* src = s.mutable_eval()->add_sources();
  src->set_name("held");
  src->add_paths(jsonl);
  return s;
}

void ExpectSameScore(const ScoreResult& eval, const ScoreResult& score, bool routing_too) {
  EXPECT_NEAR(eval.cross_entropy, score.cross_entropy, 1e-5 * score.cross_entropy);
  EXPECT_DOUBLE_EQ(eval.accuracy, score.accuracy);
  EXPECT_DOUBLE_EQ(eval.target_tokens, score.target_tokens);
  EXPECT_NEAR(eval.output_z_loss, score.output_z_loss, 1e-5 * score.output_z_loss);
  if (!routing_too) return;
  EXPECT_NEAR(eval.loss, score.loss, 1e-5 * score.loss);
  EXPECT_DOUBLE_EQ(eval.drop_fraction, score.drop_fraction);
  EXPECT_NEAR(eval.load_balance_loss, score.load_balance_loss, 1e-5);
  EXPECT_NEAR(eval.router_z_loss, score.router_z_loss, 1e-5 * score.router_z_loss);
}

TEST(EvalDuringTraining, EqualsScoreOfTheTrainersWeights) {
  testing::TempDir dir;
  testing::WriteOrDie(dir / "held.jsonl", testing::JsonlOf(testing::GeneratedDocuments(5, 60)));
  for (const int64_t rows : {8, 5}) {  // 8: whole groups on every chip; 5: extra padding groups
    const JobSpec spec = TinyWithEval(dir / "held.jsonl", rows);
    auto sets = LoadEvalSets(spec);
    ASSERT_TRUE(sets.ok()) << sets.status();
    ASSERT_EQ(sets->size(), 1u);
    // The rows are what `openmoe prep --npy` writes for the source.
    PrepOptions prep;
    prep.inputs = {spec.eval().sources(0)};
    prep.tokenizer_model = spec.data().tokenizer().model();
    auto npy_rows = HeldOutRows(prep, rows, spec.train().seq_len());
    ASSERT_TRUE(npy_rows.ok()) << npy_rows.status();
    EXPECT_EQ((*sets)[0].tokens.tokens, *npy_rows);

    std::unique_ptr<Trainer> trainer = testing::MakeTrainer(spec);
    for (int i = 0; i < 3; ++i) trainer->Step();
    // One rank holds every expert: its parameters are the whole model's.
    ASSERT_EQ(trainer->layout().total_size(), ParamLayout(DimsFromSpec(spec)).total_size());
    Evaluator evaluator(*trainer);
    const ScoreResult eval = evaluator.Evaluate(trainer->params().data(), (*sets)[0].tokens);
    auto score = ScoreTokens(spec, trainer->params().data(), (*sets)[0].tokens);
    ASSERT_TRUE(score.ok()) << score.status();
    EXPECT_GT(eval.target_tokens, 0);
    ExpectSameScore(eval, *score, /*routing_too=*/rows == 8);
  }
}

// After router.token_id_routing_after_steps, training routes by the token-id table and so does
// eval: no router runs, so its load-balance and z-losses are exactly 0 (routing by the router
// gives positive ones on the same weights).
TEST(EvalDuringTraining, RoutesByTheTokenIdTableAfterTheSwitch) {
  testing::TempDir dir;
  testing::WriteOrDie(dir / "held.jsonl", testing::JsonlOf(testing::GeneratedDocuments(5, 60)));
  JobSpec spec = TinyWithEval(dir / "held.jsonl", 8);
  spec.mutable_router()->set_token_id_routing_after_steps(1);
  auto sets = LoadEvalSets(spec);
  ASSERT_TRUE(sets.ok()) << sets.status();
  std::unique_ptr<Trainer> trainer = testing::MakeTrainer(spec);
  for (int i = 0; i < 3; ++i) trainer->Step();
  ASSERT_NE(trainer->token_id_tables(), nullptr);
  ASSERT_TRUE(trainer->token_id_tables()->built());

  Evaluator evaluator(*trainer);
  const ScoreResult by_router =
      evaluator.Evaluate(trainer->params().data(), (*sets)[0].tokens, (*sets)[0].form);
  EXPECT_GT(by_router.router_z_loss, 0);
  EXPECT_GT(by_router.load_balance_loss, 0);

  EvalSession session(*sets, *trainer);
  const EvalSession::Output out = session.AfterStep(spec.eval().every_steps());
  auto json = ParseJson(out.json);
  ASSERT_TRUE(json.ok()) << json.status() << " in " << out.json;
  const JsonValue* held = json->Find("held");
  ASSERT_NE(held, nullptr) << out.json;
  auto number = [&](const char* key) { return std::stod(held->Find(key)->text); };
  EXPECT_EQ(number("router_z_loss"), 0) << out.json;
  EXPECT_EQ(number("load_balance_loss"), 0) << out.json;
  EXPECT_GT(number("cross_entropy"), 0) << out.json;
}

// The tiny model trained on a generated corpus with the UL2 mixture (OpenMoE's, half prefix LM),
// evaluated on other generated documents: the quickstart's setting in small.
JobSpec TinyUl2WithEval(const testing::TempDir& dir, int64_t rows) {
  testing::WriteOrDie(dir / "train.jsonl", testing::JsonlOf(testing::GeneratedDocuments(1, 400)));
  testing::WriteOrDie(dir / "held.jsonl", testing::JsonlOf(testing::GeneratedDocuments(5, 200)));
  JobSpec s = TinyWithEval(dir / "held.jsonl", rows);
  s.mutable_data()->set_source(DATA_CORPUS);
  s.mutable_data()->set_objective(OBJECTIVE_UL2);
  SourceConfig* src = s.mutable_data()->add_sources();
  src->set_name("train");
  src->add_paths(dir / "train.jsonl");
  return s;
}

TEST(EvalDuringTraining, AUl2JobIsEvaluatedInThePrefixLmFormItTrainsOn) {
  testing::TempDir dir;
  const JobSpec spec = TinyUl2WithEval(dir, 8);
  auto sets = LoadEvalSets(spec);
  ASSERT_TRUE(sets.ok()) << sets.status();
  ASSERT_EQ((*sets)[0].form, RowForm::kPrefixLm);
  const TokenArray& t = (*sets)[0].tokens;
  // The rows are what `openmoe prep --npy --form prefix_lm` writes for the source.
  PrepOptions prep;
  prep.inputs = {spec.eval().sources(0)};
  prep.tokenizer_model = spec.data().tokenizer().model();
  auto npy_rows = HeldOutRows(prep, 8, spec.train().seq_len(), RowForm::kPrefixLm, "[S2S]");
  ASSERT_TRUE(npy_rows.ok()) << npy_rows.status();
  EXPECT_EQ(t.tokens, *npy_rows);
  EXPECT_TRUE(CheckRows(t, RowForm::kPrefixLm).ok());
  EXPECT_FALSE(CheckRows((*LoadEvalSets(TinyWithEval(dir / "held.jsonl", 8)))[0].tokens,
                         RowForm::kPrefixLm)
                   .ok());  // causal rows are refused in the prefix-LM form

  // The batch counts the continuation of every row and nothing else.
  const Batch b = RowsBatch(t, 0, t.rows, RowForm::kPrefixLm);
  for (int64_t r = 0; r < t.rows; ++r) {
    const int32_t* row = t.tokens.data() + r * t.seq_len;
    int64_t begin = 0, end = 0;
    ASSERT_TRUE(PrefixLmLossSpan(row, t.seq_len, &begin, &end));
    for (int64_t i = 0; i < t.seq_len; ++i) {
      const int64_t at = r * t.seq_len + i;
      EXPECT_EQ(b.loss_weights[at], i >= begin && i < end ? 1.0f : 0.0f) << r << " " << i;
      EXPECT_EQ(b.segment_ids[at], i <= end ? 1 : 0) << r << " " << i;
      if (i + 1 < t.seq_len) {
        EXPECT_EQ(b.targets[at], row[i + 1]);
      }
    }
  }

  // Eval of the prefix-LM rows equals score of them in that form.
  std::unique_ptr<Trainer> trainer = testing::MakeTrainer(spec);
  for (int i = 0; i < 2; ++i) trainer->Step();
  Evaluator evaluator(*trainer);
  const ScoreResult eval = evaluator.Evaluate(trainer->params().data(), t, RowForm::kPrefixLm);
  auto score = ScoreTokens(spec, trainer->params().data(), t, RowForm::kPrefixLm);
  ASSERT_TRUE(score.ok()) << score.status();
  EXPECT_LT(eval.target_tokens, 8 * 63 / 2 + 8);  // about half of each row's positions
  ExpectSameScore(eval, *score, /*routing_too=*/true);
}

// The quickstart's defect in small: a model trained on UL2 alone must show its held-out loss
// falling as it learns. Deterministic (seeded data and init); no wall-clock dependence.
TEST(EvalDuringTraining, HeldOutLossOfAUl2ModelFallsAsItTrains) {
  testing::TempDir dir;
  JobSpec spec = TinyUl2WithEval(dir, 16);
  spec.mutable_train()->set_threads(1);
  auto sets = LoadEvalSets(spec);
  ASSERT_TRUE(sets.ok()) << sets.status();
  std::unique_ptr<Trainer> trainer = testing::MakeTrainer(spec);
  Evaluator evaluator(*trainer);
  std::vector<double> ce;
  for (int step = 1; step <= kUl2Steps; ++step) {
    trainer->Step();
    if (step % (kUl2Steps / 4) == 0)
      ce.push_back(evaluator.Evaluate(trainer->params().data(), (*sets)[0].tokens, (*sets)[0].form)
                       .cross_entropy);
  }
  for (size_t i = 1; i < ce.size(); ++i) EXPECT_LT(ce[i], ce[i - 1]) << "eval " << i;
  EXPECT_LT(ce.back(), ce.front() - 0.3);
}

TEST(EvalDuringTraining, BadEvalSpecsNameTheField) {
  testing::TempDir dir;
  testing::WriteOrDie(dir / "held.jsonl", testing::JsonlOf(testing::GeneratedDocuments(5, 3)));
  JobSpec spec = TinyWithEval(dir / "held.jsonl", 8);
  spec.mutable_eval()->clear_sources();
  EXPECT_NE(LoadEvalSets(spec).status().message().find("eval.sources"), std::string::npos);
  spec = TinyWithEval(dir / "held.jsonl", 100000);  // far more rows than 3 documents make
  const absl::Status too_many = LoadEvalSets(spec).status();
  EXPECT_NE(too_many.message().find("eval.rows=100000"), std::string::npos) << too_many;
  spec.mutable_eval()->set_every_steps(0);  // off: nothing is read
  EXPECT_TRUE(LoadEvalSets(spec).ok());
}

// The "eval" objects of a metrics file's step records, by step.
std::map<int64_t, JsonValue> EvalRecords(const std::string& metrics) {
  std::map<int64_t, JsonValue> out;
  for (absl::string_view line :
       absl::StrSplit(testing::ReadBytes(metrics), '\n', absl::SkipEmpty())) {
    auto v = ParseJson(std::string(line));
    EXPECT_TRUE(v.ok()) << line;
    if (!v.ok() || v->Find("record")->text != "step" || v->Find("eval") == nullptr) continue;
    out[std::stoll(v->Find("step")->text)] = *v->Find("eval");
  }
  return out;
}

TEST(EvalDuringTraining, MetricsEvalAtAStepEqualsScoreOfThatCheckpointUnderMpi) {
  testing::TempDir dir;
  testing::WriteOrDie(dir / "held.jsonl", testing::JsonlOf(testing::GeneratedDocuments(5, 60)));
  const std::string job = dir / "eval.pbtxt";
  testing::WriteOrDie(job, "data { tokenizer { model: \"" + testing::TinyTokenizerPath() +
                               "\" extra_ids: 100 } }\n"
                               "eval { every_steps: 2 rows: 8 sources { name: \"held\" paths: \"" +
                               (dir / "held.jsonl") + "\" } }\n");
  // 2 ranks x 2 chips, expert_parallel 4: tokens cross ranks to their experts.
  testing::Child train = testing::StartMpi(
      2, {"train", "--job", std::string(OPENMOE_SOURCE_DIR) + "/launch/configs/tiny.pbtxt", "--job",
          job, "--set", "train.steps=4", "--set", "train.threads=1", "--set",
          "checkpoint.dir=" + (dir / "ckpt"), "--set", "checkpoint.every_steps=2", "--set",
          "logging.metrics_path=" + (dir / "metrics.jsonl")});
  ASSERT_EQ(train.Finish(), 0) << train.seen;
  EXPECT_NE(train.seen.find("eval after step 2 (causal_lm) | held: ce "), std::string::npos)
      << train.seen;
  const std::map<int64_t, JsonValue> evals = EvalRecords(dir / "metrics.jsonl");
  ASSERT_EQ(evals.size(), 2u);  // steps 2 and 4

  testing::RunResult prep = testing::RunBounded(
      {"prep", "--input", dir / "held.jsonl", "--tokenizer", testing::TinyTokenizerPath(), "--npy",
       dir / "held.npy", "--rows", "8", "--seq_len", "64"});
  ASSERT_EQ(prep.exit_code, 0) << prep.Describe();
  for (const auto& [step, eval] : evals) {
    char name[32];
    std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step));
    testing::RunResult score = testing::RunBounded(
        {"score", "--checkpoint", dir / ("ckpt/" + std::string(name)), "--tokens",
         dir / "held.npy", "--json"});
    ASSERT_EQ(score.exit_code, 0) << score.Describe();
    auto scored = ParseJson(score.out);
    ASSERT_TRUE(scored.ok()) << score.out;
    const JsonValue& held = *eval.Find("held");
    for (const char* key : {"cross_entropy", "loss", "accuracy", "drop_fraction"}) {
      const double want = std::stod(scored->Find(key)->text);
      EXPECT_NEAR(std::stod(held.Find(key)->text), want, 1e-5 * std::abs(want) + 1e-7)
          << "step " << step << " " << key;
    }
  }
}

}  // namespace
}  // namespace openmoe
