// Eval during training (`eval { every_steps rows sources }`): each source's validation losses,
// the same metrics as `openmoe score`, with router.eval_capacity_factor.
//
// Rows: eval.rows rows of train.seq_len tokens from the start of each of eval.sources, made once
// at the start of the run by SourceRows in the job's EvalRowForm (launch/source_rows.h): the
// prefix-LM form for a UL2 corpus job (the form it trains on; data/heldout_rows.h says why the
// causal form misleads there), else causal LM. What `openmoe prep --npy [--form prefix_lm]`
// writes for the same source, so the result equals `openmoe score --checkpoint step_N --tokens
// <those rows> [--form prefix_lm]` on the weights after step N (tested). Every rank reads them;
// an error is agreed by every rank.
//
// The forward runs on the trainer's mesh, collective: every rank calls Evaluate with its own
// share of the parameters (its experts and model piece), and its own Decoder and
// ExpertParallelRunner (the trainer's are left alone). Data shard c (a chip, or the chips of one
// model group) evaluates rows [c * k, (c + 1) * k) of the source, with k the rows per shard, the smallest whole number of routing groups covering the rows (rows past the end
// are padding: token 0, no target, segment 0, as `score` pads). So routing groups are the ones
// `score` forms, and cross-entropy, accuracy and output z-loss match `score` always; drop
// fractions and router losses also match when eval.rows is a multiple of num_chips x (rows per
// routing group), else the extra all-padding groups enter them (score pads only to whole groups).
// Long sources are run in chunks of at most the training microbatch's rows per chip.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "launch/score.h"
#include "launch/trainer.h"
#include "model/decoder.h"
#include "model/params.h"
#include "parallel/communicator.h"
#include "parallel/expert_parallel.h"
#include "parallel/mesh.h"
#include "proto/job.pb.h"

namespace openmoe {

struct EvalSet {
  std::string name;
  TokenArray tokens;  // (eval.rows, train.seq_len)
  RowForm form = RowForm::kCausalLm;
};

// The rows of every eval source; empty when eval.every_steps is 0. InvalidArgument naming the
// field for eval.every_steps < 0, eval.rows < 1 or every_steps > 0 with no eval.sources.
absl::StatusOr<std::vector<EvalSet>> LoadEvalSets(const JobSpec& spec);

// Whether eval runs after `steps_done` steps (every eval.every_steps, and after the last step).
bool EvalDue(const JobSpec& spec, int64_t steps_done);

class Evaluator {
 public:
  // On the trainer's mesh: its spec, its data x expert mesh of shards (Trainer::shard_mesh), this
  // rank's parameter layout, the ranks holding its model piece (Trainer::pieces) and its model
  // group (Trainer::model_group). The trainer must outlive this.
  explicit Evaluator(Trainer& trainer);

  // Collective: every rank, same tokens. params: this rank's parameters (layout).
  // token_id_tables: non-null routes by token id (built tables, as training after the switch).
  ScoreResult Evaluate(const float* params, const TokenArray& tokens,
                       RowForm form = RowForm::kCausalLm,
                       const TokenIdTables* token_id_tables = nullptr);

 private:
  // The eval routing: the job's (eval capacity), with the trainer's selection biases and comm_
  // as the ranks holding the batch.
  RoutingConfig EvalRouting(const TokenIdTables* token_id_tables) const;

  JobSpec spec_;
  const Mesh& mesh_;
  Communicator* comm_;
  std::unique_ptr<ExpertParallelRunner> runner_;
  const ExpertBias* expert_bias_;  // the trainer's (null: none)
  Decoder decoder_;
};

// The training loop's side of eval: the sets and the evaluator of one run.
class EvalSession {
 public:
  // sets: LoadEvalSets's (empty: eval off). The trainer must outlive the session.
  EvalSession(std::vector<EvalSet> sets, Trainer& trainer);

  struct Output {
    std::string json;  // the "eval" value of the step's metrics record; empty when not due
    std::string line;  // the console line (rank 0 prints it)
  };
  // After `steps_done` steps: evaluates every set if EvalDue. Collective.
  Output AfterStep(int64_t steps_done);

 private:
  std::vector<EvalSet> sets_;
  Trainer& trainer_;
  std::unique_ptr<Evaluator> evaluator_;  // null when eval is off
};

// `record` (a JSON object) with "key":value appended; record unchanged when value is empty.
std::string WithJsonKey(const std::string& record, const std::string& key,
                        const std::string& value);

// {"<source>":{cross_entropy, perplexity, accuracy, loss, ...},...}: the value of a metrics
// record's "eval" key (every number finite or null, as in every record).
std::string EvalJson(const std::vector<std::pair<std::string, ScoreResult>>& results);
// "eval after step 100 (prefix_lm) | text: ce 5.1234 (ppl 168.0) acc 0.2100 drop 0.0123 | ..."
std::string EvalLine(int64_t steps_done,
                     const std::vector<std::pair<std::string, ScoreResult>>& results);

}  // namespace openmoe
