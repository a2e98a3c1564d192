// `openmoe analyze`: what the routers of one or more checkpoints do (OpenMoE paper, sections 4-5).
//
//   openmoe analyze --checkpoint DIR|FILE.safetensors [--checkpoint ...] --job FILE [--job ...]
//                   [--set f=v ...] [--out DIR] [--rows N] [--min_count K]
//
// Tokens: --rows rows (default 64) of train.seq_len tokens from the start of every named source,
// the job's data.sources first, then eval.sources (the held-out ones, when the job has them),
// each made into causal LM rows by SourceRows (launch/source_rows.h), as `openmoe score` reads
// them. A job that names no source (synthetic data) is analysed on its own training stream
// instead: its first --rows rows (MakeBatchSource, one shard), source "train", said on `log`;
// without data.tokenizer, top tokens are shown as "<id>". The forward is the single-process one `score` runs (all experts in this process, whatever
// mesh wrote the checkpoint), with router.eval_capacity_factor; each source's rows are routed
// apart (its own routing groups, padding rows appended to complete the last group and left out
// of every statistic). Every checkpoint must hold the job's model (CheckModelCompatible); the
// last --checkpoint is the reference ("the last") for agreement, and the one whose routing the
// per-layer tables describe. Statistics: model/routing_stats.h (specialisation over ids seen at
// least --min_count times, default 8; the control by seeded sampling, 8 draws).
//
// Writes into --out (default `analysis`): analysis.json with, per MoE layer,
//   token_specialization    per checkpoint, and the top token ids per expert (decoded)
//   specialization_control  per checkpoint
//   domain_expert_share     each source's top-1 distribution over experts, pairwise
//                           Jensen-Shannon divergences (bits)
//   drop_by_position        dropped fraction per decile of the row, first and second choices
//   routing_agreement       per checkpoint: top-1 agreement per token with the last, and of the
//                           token-id -> expert table
// the same as CSVs (specialization.csv, top_tokens.csv, domain_expert_share.csv,
// drop_by_position.csv, routing_agreement.csv), and PNGs drawn by gnuplot from them
// (specialization.png, domain_expert_share.png, drop_by_position.png, routing_agreement.png;
// plots.gp re-draws them). Without gnuplot on PATH the PNGs are skipped with a note.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace openmoe {

struct AnalyzeOptions {
  std::vector<std::string> checkpoints;  // oldest first; the last is the reference
  std::vector<std::string> job_files, sets;
  std::string out_dir = "analysis";
  int64_t rows = 64;
  int64_t min_count = 8;
  bool plots = true;
};

// The whole subcommand; progress and a summary of the findings go to `log`.
absl::Status RunAnalyze(const AnalyzeOptions& options, std::ostream& log);

}  // namespace openmoe
