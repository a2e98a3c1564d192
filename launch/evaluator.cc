#include "launch/evaluator.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/batch.h"
#include "core/io/json.h"
#include "launch/metrics.h"
#include "launch/source_rows.h"
#include "model/config.h"

namespace openmoe {

absl::StatusOr<std::vector<EvalSet>> LoadEvalSets(const JobSpec& spec) {
  const EvalConfig& eval = spec.eval();
  if (eval.every_steps() < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("eval.every_steps=", eval.every_steps(), ": must be >= 0 (0: no eval)"));
  std::vector<EvalSet> sets;
  if (eval.every_steps() == 0) return sets;
  const RowForm form = EvalRowForm(spec.data());
  if (eval.rows() < 1)
    return absl::InvalidArgumentError(absl::StrCat("eval.rows=", eval.rows(), ": must be >= 1"));
  if (eval.sources_size() == 0)
    return absl::InvalidArgumentError(absl::StrCat(
        "eval.every_steps=", eval.every_steps(), ": needs at least one eval.sources entry"));
  for (int i = 0; i < eval.sources_size(); ++i) {
    absl::StatusOr<TokenArray> rows = SourceRows(eval.sources(i), i, spec.data(), eval.rows(),
                                                 spec.train().seq_len(), "eval.rows", form);
    if (!rows.ok())
      return absl::Status(rows.status().code(),
                          absl::StrCat("eval.sources[", i, "]: ", rows.status().message()));
    for (int32_t v : rows->tokens) {
      if (v < 0 || v >= spec.model().vocab_size())
        return absl::InvalidArgumentError(absl::StrCat("eval.sources[", i, "]: token ", v,
                                                       " is outside [0, model.vocab_size=",
                                                       spec.model().vocab_size(), ")"));
    }
    sets.push_back({SourceName(eval.sources(i), i), *std::move(rows), form});
  }
  return sets;
}

bool EvalDue(const JobSpec& spec, int64_t steps_done) {
  const int64_t every = spec.eval().every_steps();
  return every > 0 && (steps_done % every == 0 || steps_done == spec.train().steps());
}

Evaluator::Evaluator(Trainer& trainer)
    : spec_(trainer.spec()),
      mesh_(trainer.shard_mesh()),
      comm_(&trainer.pieces()),
      runner_(spec_.model().num_experts() > 0
                  ? std::make_unique<ExpertParallelRunner>(mesh_, comm_)
                  : nullptr),
      expert_bias_(trainer.expert_bias()),
      decoder_(trainer.layout(), EvalRouting(nullptr), runner_.get(), &trainer.model_group()) {}

RoutingConfig Evaluator::EvalRouting(const TokenIdTables* token_id_tables) const {
  RoutingConfig routing = RoutingFromSpec(spec_, /*eval=*/true);
  routing.token_id_tables = token_id_tables;
  routing.balance_comm = comm_;
  routing.expert_bias = expert_bias_;
  return routing;
}

ScoreResult Evaluator::Evaluate(const float* params, const TokenArray& tokens, RowForm form,
                                const TokenIdTables* token_id_tables) {
  decoder_.SetRouting(EvalRouting(token_id_tables));
  const int64_t chips = mesh_.num_chips;
  const int64_t group = spec_.model().num_experts() > 0 ? spec_.router().group_size() : 1;
  // Rows per routing group boundary: a chip's rows must be whole groups.
  const int64_t unit = group / std::gcd(group, tokens.seq_len);
  const int64_t per_chip = ((tokens.rows + chips - 1) / chips + unit - 1) / unit * unit;
  const int64_t micro_rows = spec_.train().batch_rows() / chips / spec_.train().microbatches();
  const int64_t chunk = std::max(unit, micro_rows / unit * unit);
  LossScales scales;  // zero: only the sums are used (no backward)
  scales.output_z_weight = spec_.loss().output_z_loss_weight();
  DecoderSums sums;
  for (int64_t a = 0; a < per_chip; a += chunk) {
    const int64_t count = std::min(chunk, per_chip - a);
    Batch batch;
    for (int64_t c = 0; c < mesh_.chips_per_rank; ++c)
      batch.Append(RowsBatch(tokens, (mesh_.FirstChip() + c) * per_chip + a, count, form));
    sums.Add(decoder_.Forward(params, batch, scales, spec_.logging().position_buckets()));
  }
  ReduceDecoderSums(*comm_, &sums);
  ScoreResult r =
      ScoreFromSums(spec_, sums, tokens.rows, tokens.seq_len, chips * per_chip - tokens.rows);
  r.form = form;
  return r;
}

EvalSession::EvalSession(std::vector<EvalSet> sets, Trainer& trainer)
    : sets_(std::move(sets)), trainer_(trainer) {
  if (!sets_.empty()) {
    evaluator_ = std::make_unique<Evaluator>(trainer);
  }
}

EvalSession::Output EvalSession::AfterStep(int64_t steps_done) {
  Output out;
  if (evaluator_ == nullptr || !EvalDue(trainer_.spec(), steps_done)) return out;
  // After the switch to token-id routing, eval routes as training does: by the table.
  const TokenIdTables* tables = trainer_.token_id_tables();
  if (tables != nullptr && !tables->built()) tables = nullptr;
  std::vector<std::pair<std::string, ScoreResult>> results;
  for (const EvalSet& set : sets_) {
    results.emplace_back(
        set.name, evaluator_->Evaluate(trainer_.params().data(), set.tokens, set.form, tables));
  }
  out.json = EvalJson(results);
  out.line = EvalLine(steps_done, results);
  return out;
}

std::string WithJsonKey(const std::string& record, const std::string& key,
                        const std::string& value) {
  if (value.empty() || record.empty() || record.back() != '}') return record;
  const bool empty_object = record.size() == 2;
  return absl::StrCat(record.substr(0, record.size() - 1), empty_object ? "" : ",",
                      JsonQuote(key), ":", value, "}");
}

std::string EvalJson(const std::vector<std::pair<std::string, ScoreResult>>& results) {
  std::string out = "{";
  for (size_t i = 0; i < results.size(); ++i) {
    const ScoreResult& r = results[i].second;
    std::vector<std::string> by_choice, layers;
    for (double v : r.drop_fraction_by_choice) by_choice.push_back(JsonNumber(v));
    for (const LayerScore& l : r.layers) layers.push_back(JsonNumber(l.drop_fraction));
    absl::StrAppend(&out, i ? "," : "", JsonQuote(results[i].first), ":{\"rows\":", r.rows,
                    ",\"form\":\"", RowFormName(r.form), "\"", ",\"padded_rows\":", r.padded_rows,
                    ",\"target_tokens\":", JsonNumber(r.target_tokens),
                    ",\"cross_entropy\":", JsonNumber(r.cross_entropy),
                    ",\"perplexity\":", JsonNumber(std::exp(r.cross_entropy)),
                    ",\"accuracy\":", JsonNumber(r.accuracy), ",\"loss\":", JsonNumber(r.loss),
                    ",\"output_z_loss\":", JsonNumber(r.output_z_loss),
                    ",\"load_balance_loss\":", JsonNumber(r.load_balance_loss),
                    ",\"router_z_loss\":", JsonNumber(r.router_z_loss),
                    ",\"drop_fraction\":", JsonNumber(r.drop_fraction),
                    ",\"drop_fraction_by_choice\":[", absl::StrJoin(by_choice, ","),
                    "],\"drop_fraction_by_layer\":[", absl::StrJoin(layers, ","), "]}");
  }
  return out + "}";
}

std::string EvalLine(int64_t steps_done,
                     const std::vector<std::pair<std::string, ScoreResult>>& results) {
  std::string out = absl::StrFormat("eval after step %d (%s)", steps_done,
                                    results.empty() ? "" : RowFormName(results[0].second.form));
  for (const auto& [name, r] : results) {
    absl::StrAppendFormat(&out, " | %s: ce %.4f (ppl %.1f) acc %.4f drop %.4f", name,
                          r.cross_entropy, std::exp(r.cross_entropy), r.accuracy,
                          r.drop_fraction);
  }
  return out;
}

}  // namespace openmoe
