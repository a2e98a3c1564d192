// `openmoe score`: the model's losses on given tokens, with evaluation routing.
//
//   openmoe score --checkpoint DIR|FILE.safetensors --tokens FILE.npy [--form causal_lm|prefix_lm]
//   [--job FILE ...] [--set f=v ...] [--json]
//
// The tokens are a 2-D C-order .npy array (int32 '<i4', or int64 '<i8' with values that fit) of
// shape [rows, seq_len]; each row is one sequence: position s predicts the token at s + 1 of the
// same row, the last position has no target. In the causal LM form (the default) every other
// position counts and segment ids are 1; in the prefix-LM form (--form prefix_lm, rows from
// `openmoe prep --npy --form prefix_lm`, data/heldout_rows.h) each row is EOS mode prefix EOS
// continuation and only the continuation counts: the form a UL2-trained model learned. The forward
// uses the job's router with router.eval_capacity_factor. Routing groups are router.group_size
// tokens of the row-major token stream, as in training; when rows * seq_len is not a multiple of
// it, rows of token 0 with no targets (segment id 0) are appended to complete the last group, as
// padding in a T5X evaluation batch would be: they take part in routing (and in the drop
// statistics) but not in any loss. Single process; no MPI.
//
// Weights: a checkpoint directory (its job spec, or --job when given, which must describe the
// same model) or a safetensors file from `openmoe export` (its embedded job spec, or --job).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/heldout_rows.h"
#include "model/expert_bias.h"
#include "model/loss_summary.h"
#include "proto/job.pb.h"

namespace openmoe {

struct TokenArray {
  int64_t rows = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> tokens;  // (rows, seq_len)
};

// Reads a .npy token array (see above). InvalidArgument naming the file and the problem.
absl::StatusOr<TokenArray> ReadNpyTokens(const std::string& path);
// Writes one (for tests and tools): int32, C order.
absl::Status WriteNpyTokens(const std::string& path, const TokenArray& tokens);

struct LayerScore {
  int64_t layer = 0;
  double drop_fraction = 0;                     // dropped assignments / routed assignments
  std::vector<double> drop_fraction_by_choice;  // (top_k) dropped choice-j assignments / tokens
  double fully_dropped_fraction = 0;            // tokens with every choice dropped / tokens
  double load_balance_loss = 0;                 // mean over groups
  double router_z_loss = 0;                     // mean over tokens
};

struct ScoreResult {
  int64_t rows = 0, seq_len = 0, padded_rows = 0;
  RowForm form = RowForm::kCausalLm;  // how the rows were read
  double target_tokens = 0;
  double capacity_factor = 0;  // the eval capacity factor used
  // Means over target tokens.
  double cross_entropy = 0, output_z_loss = 0, accuracy = 0;
  // Means over MoE layers (and groups / tokens), unweighted; 0 for a dense model.
  double load_balance_loss = 0, router_z_loss = 0;
  // The training objective with the job's weights: ce + z_w * z + aux_w * lb + rz_w * rz.
  double loss = 0;
  // Over all MoE layers.
  double drop_fraction = 0;
  std::vector<double> drop_fraction_by_choice;
  double fully_dropped_fraction = 0;
  std::vector<LayerScore> layers;  // MoE layers only
};

// Forward of `params` (the full ParamLayout of `spec`'s model, all experts) on `tokens` read in
// `form`. InvalidArgument for a token id outside [0, model.vocab_size), naming row and column,
// or a row not of the form (CheckRows).
// expert_bias: the selection biases the model trained with (null: none).
absl::StatusOr<ScoreResult> ScoreTokens(const JobSpec& spec, const float* params,
                                        const TokenArray& tokens,
                                        RowForm form = RowForm::kCausalLm,
                                        const ExpertBias* expert_bias = nullptr);

// The result from the forward's sums (reduced over every token scored): rows real rows and
// padded_rows padding rows of seq_len tokens. Used by ScoreTokens and by eval during training.
ScoreResult ScoreFromSums(const JobSpec& spec, const DecoderSums& sums, int64_t rows,
                          int64_t seq_len, int64_t padded_rows);

std::string ScoreJson(const ScoreResult& r);
std::string ScoreText(const ScoreResult& r);

struct ScoreOptions {
  std::string checkpoint;  // checkpoint directory or .safetensors file
  std::string tokens;      // .npy
  std::vector<std::string> job_files, sets;
  bool json = false;
  RowForm form = RowForm::kCausalLm;
};

// The whole subcommand: loads weights and tokens, scores, prints to `out`.
absl::Status RunScore(const ScoreOptions& options, std::ostream& out);

}  // namespace openmoe
