#include "launch/analyze.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "core/check.h"
#include "core/io/file.h"
#include "core/io/json.h"
#include "core/tensor.h"
#include "data/batch_source.h"
#include "data/tokenizer.h"
#include "launch/checkpoint/checkpoint.h"
#include "launch/job_loader.h"
#include "launch/metrics.h"
#include "launch/source_rows.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/params.h"
#include "model/routing_stats.h"

namespace openmoe {
namespace {

constexpr int64_t kTokensPerCall = 8192;  // forward chunk, as `score`
constexpr int64_t kDeciles = 10;
constexpr int64_t kControlDraws = 8;
constexpr uint64_t kControlSeed = 0;
constexpr int64_t kTopTokens = 10;

struct NamedRows {
  std::string name;
  TokenArray tokens;
};

// One checkpoint's routing: per MoE layer, every real token of every source.
struct CheckpointRouting {
  std::string label;  // "step 300" or the file name
  int64_t step = -1;  // -1: unknown (safetensors)
  std::vector<int64_t> layers;
  std::vector<RoutedTokens> routed;  // parallel to layers
};

// The weights, and from a checkpoint directory its selection biases (null when none).
absl::Status LoadWeights(const std::string& path, const JobSpec& spec, const ParamLayout& layout,
                         float* params, int64_t* step, std::unique_ptr<ExpertBias>* bias,
                         std::ostream& log) {
  std::error_code ec;
  bias->reset();
  if (std::filesystem::is_directory(path, ec)) {
    OPENMOE_ASSIGN_OR_RETURN(CheckpointReader reader, CheckpointReader::Open(path));
    if (absl::Status s = CheckModelCompatible(reader.manifest().job(), spec); !s.ok())
      return absl::Status(s.code(), absl::StrCat("checkpoint ", path, ": ", s.message()));
    *step = reader.manifest().step();
    std::string warning;
    OPENMOE_ASSIGN_OR_RETURN(*bias, ReadExpertBias(reader, spec, &warning));
    if (!warning.empty()) log << "analyze: " << warning << "\n";
    return reader.LoadInto(layout, params, nullptr);
  }
  *step = -1;
  return LoadParamsFromSafetensors(path, layout, params);
}

// The forward `score` runs, over each source apart, recording every real token's routing.
// bias: the checkpoint's selection biases (null: none). Experts choosing, a token's record is its
// router.top_k most probable experts, dropped where that expert did not take it.
CheckpointRouting Route(const JobSpec& spec, const float* params,
                        const std::vector<NamedRows>& sources, const ExpertBias* bias) {
  const ModelDims dims = DimsFromSpec(spec);
  const ParamLayout layout(dims);
  RoutingConfig routing = RoutingFromSpec(spec, /*eval=*/true);
  routing.expert_bias = bias;
  Decoder decoder(layout, routing);
  CheckpointRouting out;
  for (int64_t l = 0; l < dims.num_layers; ++l) {
    if (dims.num_experts > 0 && (l + 1) % dims.moe_interval == 0) {
      out.layers.push_back(l);
      RoutedTokens r;
      r.num_experts = dims.num_experts;
      r.top_k = spec.router().top_k();
      out.routed.push_back(r);
    }
  }
  const int64_t group = spec.router().group_size();
  LossScales scales;
  for (size_t si = 0; si < sources.size(); ++si) {
    const TokenArray& t = sources[si].tokens;
    const int64_t unit = group / std::gcd(group, t.seq_len);
    const int64_t per_call = unit * std::max<int64_t>(1, kTokensPerCall / (unit * t.seq_len));
    const int64_t total_rows = (t.rows + unit - 1) / unit * unit;
    for (int64_t row = 0; row < total_rows; row += per_call) {
      const Batch batch =
          RowsBatch(t, row, std::min(per_call, total_rows - row), RowForm::kCausalLm);
      decoder.Forward(params, batch, scales, spec.logging().position_buckets());
      for (size_t m = 0; m < out.layers.size(); ++m) {
        const Routing* r = decoder.routing(out.layers[m]);
        OPENMOE_CHECK(r != nullptr && r->num_tokens == batch.num_tokens());
        const int64_t k = r->top_k;
        for (int64_t i = 0; i < batch.num_tokens(); ++i) {
          if (batch.segment_ids[i] == 0) continue;  // padding rows
          out.routed[m].Add(batch.tokens[i], static_cast<int32_t>(si),
                            static_cast<int32_t>(i % t.seq_len), &r->choice_expert[i * k],
                            &r->choice_slot[i * k]);
        }
      }
    }
  }
  return out;
}

std::string Num(double v) { return JsonNumber(v); }

std::string Doubles(const std::vector<double>& v) {
  std::vector<std::string> s;
  for (double x : v) s.push_back(Num(x));
  return absl::StrCat("[", absl::StrJoin(s, ","), "]");
}

// A CSV field: the piece JSON-quoted (control characters escaped, quotes doubled for CSV).
std::string CsvPiece(const std::string& piece) {
  std::string q = JsonQuote(piece);
  std::string out = "\"";
  for (char c : q.substr(1, q.size() - 2)) {
    out += c;
    if (c == '"') out += '"';
  }
  return out + "\"";
}

struct LayerResult {
  std::vector<Specialization> spec, control;  // per checkpoint
  std::vector<double> top1_agreement, table_agreement;  // per checkpoint, vs the last
  std::vector<std::vector<double>> share;               // per source (last checkpoint)
  DropByPosition drop;                                  // last checkpoint
  std::vector<std::vector<TopToken>> top;               // per expert (last checkpoint)
};

std::string GnuplotScript(const std::string& out, const std::vector<int64_t>& layers,
                          const std::vector<std::string>& source_names, int64_t top_k,
                          bool steps_known) {
  std::string s = absl::StrCat(
      "# Drawn by `openmoe analyze`; gnuplot plots.gp (from ", out, ") redraws.\n",
      "set terminal pngcairo size 1000,600 noenhanced font ',11'\n"
      "set datafile separator ','\nset grid\nset key outside right top\n");
  auto per_layer = [&](const std::string& file, const std::string& using_cols,
                       const std::string& style, const std::string& title) {
    std::vector<std::string> parts;
    for (int64_t l : layers) {
      parts.push_back(absl::StrFormat("'%s' skip 1 using %s with %s title 'layer %d%s'", file,
                                      absl::StrReplaceAll(using_cols, {{"L", absl::StrCat(l)}}),
                                      style, l, title));
    }
    return absl::StrJoin(parts, ", ");
  };
  // specialization.csv: checkpoint,step,layer,specialization,control,ids,occurrences
  const std::string x = steps_known ? "2" : "1";
  absl::StrAppend(&s, "set output 'specialization.png'\n",
                  "set title 'token-id specialisation (top-1 share to the id''s most frequent "
                  "expert) vs the control'\n",
                  "set xlabel '", steps_known ? "checkpoint step" : "checkpoint", "'\n",
                  "set ylabel 'count-weighted share'\nset yrange [0:1]\nplot ",
                  per_layer("specialization.csv", x + ":($3==L?$4:NaN)", "linespoints lw 2", ""),
                  ", ",
                  per_layer("specialization.csv", x + ":($3==L?$5:NaN)", "linespoints dt 2",
                            " control"),
                  "\n");
  absl::StrAppend(&s, "set output 'routing_agreement.png'\n",
                  "set title 'agreement with the last checkpoint'\n",
                  "set ylabel 'fraction agreeing'\nplot ",
                  per_layer("routing_agreement.csv", x + ":($3==L?$4:NaN)", "linespoints lw 2",
                            " top-1 per token"),
                  ", ",
                  per_layer("routing_agreement.csv", x + ":($3==L?$5:NaN)", "linespoints dt 2",
                            " token-id table"),
                  "\n");
  // drop_by_position.csv: layer,decile,first_choice,second_choice,tokens
  std::string drop = per_layer("drop_by_position.csv", "2:($1==L?$3:NaN)", "linespoints lw 2",
                               " first choice");
  if (top_k > 1) {
    absl::StrAppend(&drop, ", ",
                    per_layer("drop_by_position.csv", "2:($1==L?$4:NaN)", "linespoints dt 2",
                              " second choice"));
  }
  absl::StrAppend(&s, "set output 'drop_by_position.png'\n",
                  "set title 'dropped fraction by position in the row (last checkpoint)'\n",
                  "set xlabel 'decile of the row (0 = first tenth)'\n",
                  "set ylabel 'dropped / tokens'\nset yrange [0:*]\nplot ", drop, "\n");
  // domain_expert_share.csv: layer,source_index,source,expert,share; one panel per layer.
  absl::StrAppend(&s, "set output 'domain_expert_share.png'\nset yrange [0:*]\n",
                  "set multiplot layout 1,", layers.size(),
                  " title 'top-1 share of each expert by source (last checkpoint)'\n",
                  "set xlabel 'expert'\nset ylabel 'share of the source''s tokens'\n"
                  "set key inside top right\nset xtics 1\n");
  for (int64_t l : layers) {
    std::vector<std::string> parts;
    for (size_t src = 0; src < source_names.size(); ++src) {
      parts.push_back(absl::StrFormat(
          "'domain_expert_share.csv' skip 1 using 4:($1==%d && $2==%d ? $5 : NaN) "
          "with linespoints lw 2 title '%s'",
          l, src, absl::StrReplaceAll(source_names[src], {{"'", "''"}})));
    }
    absl::StrAppend(&s, "set title 'layer ", l, "'\nplot ", absl::StrJoin(parts, ", "), "\n");
  }
  absl::StrAppend(&s, "unset multiplot\n");
  return s;
}

}  // namespace

absl::Status RunAnalyze(const AnalyzeOptions& options, std::ostream& log) {
  if (options.checkpoints.empty())
    return absl::InvalidArgumentError("analyze: needs at least one --checkpoint");
  if (options.rows < 1)
    return absl::InvalidArgumentError(absl::StrCat("analyze: --rows ", options.rows, " < 1"));
  if (options.min_count < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("analyze: --min_count ", options.min_count, " < 1"));
  OPENMOE_ASSIGN_OR_RETURN(const JobSpec spec, LoadJob(options.job_files, options.sets));
  const ModelDims dims = DimsFromSpec(spec);
  if (dims.num_experts == 0)
    return absl::InvalidArgumentError("analyze: model.num_experts is 0 (no routing to analyze)");

  // The named sources: data.sources, then eval.sources.
  std::vector<NamedRows> sources;
  const int64_t seq_len = spec.train().seq_len();
  auto add = [&](const SourceConfig& src, int64_t index, const std::string& where) -> absl::Status {
    absl::StatusOr<TokenArray> rows =
        SourceRows(src, index, spec.data(), options.rows, seq_len, "--rows");
    if (!rows.ok())
      return absl::Status(rows.status().code(),
                          absl::StrCat(where, "[", index, "]: ", rows.status().message()));
    for (int32_t v : rows->tokens) {
      if (v < 0 || v >= dims.vocab_size)
        return absl::InvalidArgumentError(absl::StrCat(where, "[", index, "]: token ", v,
                                                       " outside model.vocab_size"));
    }
    sources.push_back({SourceName(src, index), *std::move(rows)});
    return absl::OkStatus();
  };
  for (int i = 0; i < spec.data().sources_size(); ++i)
    OPENMOE_RETURN_IF_ERROR(add(spec.data().sources(i), i, "data.sources"));
  for (int i = 0; i < spec.eval().sources_size(); ++i)
    OPENMOE_RETURN_IF_ERROR(add(spec.eval().sources(i), i, "eval.sources"));
  if (sources.empty()) {
    // Any job that trains has a stream: its first --rows rows as one shard, i.e. the global rows
    // the first steps trained on (synthetic data included).
    OPENMOE_ASSIGN_OR_RETURN(std::unique_ptr<BatchSource> stream, MakeBatchSource(spec, 0, 1));
    Batch batch;
    OPENMOE_RETURN_IF_ERROR(stream->Next(options.rows, seq_len, &batch));
    sources.push_back({"train", {batch.rows, batch.seq_len, std::move(batch.tokens)}});
    log << absl::StrFormat(
        "analyze: the job names no data.sources or eval.sources: routing %d rows of its own "
        "training stream (%s), as source \"train\"\n",
        options.rows, DataSourceKind_Name(spec.data().source()));
  }
  // Pieces decode through data.tokenizer; a job without one (synthetic data) shows ids.
  std::shared_ptr<const Tokenizer> tokenizer;
  if (!spec.data().tokenizer().model().empty()) {
    OPENMOE_ASSIGN_OR_RETURN(tokenizer, Tokenizer::LoadShared(spec.data().tokenizer().model(),
                                                              spec.data().tokenizer().extra_ids()));
  }
  auto piece = [&](int32_t id) {
    return tokenizer != nullptr ? tokenizer->IdToPiece(id) : absl::StrCat("<", id, ">");
  };
  log << absl::StrFormat("analyze: %d sources x %d rows x %d tokens, %d checkpoint(s)\n",
                         sources.size(), options.rows, seq_len, options.checkpoints.size());

  const ParamLayout layout(dims);
  Tensor params({layout.total_size()});
  std::vector<CheckpointRouting> runs;
  bool steps_known = true;
  for (const std::string& path : options.checkpoints) {
    int64_t step = -1;
    std::unique_ptr<ExpertBias> bias;
    OPENMOE_RETURN_IF_ERROR(LoadWeights(path, spec, layout, params.data(), &step, &bias, log));
    runs.push_back(Route(spec, params.data(), sources, bias.get()));
    runs.back().step = step;
    runs.back().label = step >= 0 ? absl::StrCat("step ", step)
                                  : std::filesystem::path(path).filename().string();
    steps_known = steps_known && step >= 0;
    log << absl::StrFormat("analyze: routed %s (%s)\n", path, runs.back().label);
  }
  const CheckpointRouting& last = runs.back();
  const size_t num_layers = last.layers.size();

  std::vector<LayerResult> results(num_layers);
  for (size_t m = 0; m < num_layers; ++m) {
    LayerResult& res = results[m];
    const RoutedTokens& ref = last.routed[m];
    const std::vector<int32_t> ref_top1 = ref.Top1();
    const std::vector<TableEntry> ref_table =
        TokenExpertTable(ref.token, ref_top1, dims.num_experts, options.min_count);
    for (const CheckpointRouting& run : runs) {
      const RoutedTokens& r = run.routed[m];
      const std::vector<int32_t> top1 = r.Top1();
      res.spec.push_back(TokenSpecialization(r.token, top1, dims.num_experts, options.min_count));
      res.control.push_back(SpecializationControl(r.token, top1, dims.num_experts,
                                                  options.min_count, kControlDraws,
                                                  kControlSeed));
      res.top1_agreement.push_back(Top1Agreement(top1, ref_top1));
      res.table_agreement.push_back(TableAgreement(
          TokenExpertTable(r.token, top1, dims.num_experts, options.min_count), ref_table));
    }
    for (size_t s = 0; s < sources.size(); ++s)
      res.share.push_back(
          ExpertShare(ref.OfSource(static_cast<int32_t>(s)).Top1(), dims.num_experts));
    res.drop = DropFractionByPosition(ref, seq_len, kDeciles);
    res.top = TopTokensPerExpert(ref.token, ref_top1, dims.num_experts, options.min_count,
                                 kTopTokens);
  }

  // analysis.json
  std::vector<std::string> ckpt_names, src_names;
  for (size_t c = 0; c < runs.size(); ++c)
    ckpt_names.push_back(absl::StrCat("{\"path\":", JsonQuote(options.checkpoints[c]),
                                      ",\"step\":", runs[c].step, "}"));
  for (const NamedRows& s : sources)
    src_names.push_back(absl::StrCat("{\"name\":", JsonQuote(s.name), ",\"rows\":", s.tokens.rows,
                                     "}"));
  std::vector<std::string> spec_json, control_json, domain_json, drop_json, agree_json;
  for (size_t m = 0; m < num_layers; ++m) {
    const LayerResult& res = results[m];
    const int64_t layer = last.layers[m];
    std::vector<double> sv, cv;
    for (const Specialization& s : res.spec) sv.push_back(s.value);
    for (const Specialization& s : res.control) cv.push_back(s.value);
    std::vector<std::string> experts;
    for (int64_t e = 0; e < dims.num_experts; ++e) {
      std::vector<std::string> toks;
      for (const TopToken& t : res.top[e]) {
        toks.push_back(absl::StrCat("{\"id\":", t.id, ",\"piece\":", JsonQuote(piece(t.id)),
                                    ",\"count\":", t.count, ",\"share\":", Num(t.share), "}"));
      }
      experts.push_back(absl::StrCat("{\"expert\":", e, ",\"tokens\":[", absl::StrJoin(toks, ","), "]}"));
    }
    spec_json.push_back(absl::StrCat(
        "{\"layer\":", layer, ",\"value\":", Num(res.spec.back().value),
        ",\"ids\":", res.spec.back().ids, ",\"occurrences\":", res.spec.back().occurrences,
        ",\"by_checkpoint\":", Doubles(sv), ",\"top_tokens_per_expert\":[",
        absl::StrJoin(experts, ","), "]}"));
    control_json.push_back(absl::StrCat("{\"layer\":", layer, ",\"value\":",
                                        Num(res.control.back().value), ",\"by_checkpoint\":",
                                        Doubles(cv), "}"));
    std::vector<std::string> shares, js;
    for (size_t s = 0; s < sources.size(); ++s) {
      shares.push_back(absl::StrCat(JsonQuote(sources[s].name), ":", Doubles(res.share[s])));
      for (size_t t = s + 1; t < sources.size(); ++t) {
        js.push_back(absl::StrCat("{\"a\":", JsonQuote(sources[s].name), ",\"b\":",
                                  JsonQuote(sources[t].name), ",\"js_bits\":",
                                  Num(JensenShannon(res.share[s], res.share[t])), "}"));
      }
    }
    domain_json.push_back(absl::StrCat("{\"layer\":", layer, ",\"share\":{",
                                       absl::StrJoin(shares, ","), "},\"jensen_shannon\":[",
                                       absl::StrJoin(js, ","), "]}"));
    std::vector<std::string> by_choice;
    for (const std::vector<double>& c : res.drop.by_choice) by_choice.push_back(Doubles(c));
    drop_json.push_back(absl::StrCat("{\"layer\":", layer, ",\"deciles\":", kDeciles,
                                     ",\"tokens\":[", absl::StrJoin(res.drop.tokens, ","),
                                     "],\"by_choice\":[", absl::StrJoin(by_choice, ","), "]}"));
    agree_json.push_back(absl::StrCat("{\"layer\":", layer, ",\"token_top1\":",
                                      Doubles(res.top1_agreement), ",\"token_id_table\":",
                                      Doubles(res.table_agreement), "}"));
  }
  const RoutingConfig eval_routing = RoutingFromSpec(spec, /*eval=*/true);
  const std::string json = absl::StrCat(
      "{\"checkpoints\":[", absl::StrJoin(ckpt_names, ","), "],\"sources\":[",
      absl::StrJoin(src_names, ","), "],\"seq_len\":", seq_len,
      ",\"capacity_factor\":", Num(eval_routing.capacity_factor),
      ",\"min_count\":", options.min_count,
      ",\"control\":\"each occurrence's top-1 drawn from the layer's overall top-1 distribution; "
      "seeded sampling, mean of ", kControlDraws, " draws\"",
      ",\"token_specialization\":[", absl::StrJoin(spec_json, ","),
      "],\"specialization_control\":[", absl::StrJoin(control_json, ","),
      "],\"domain_expert_share\":[", absl::StrJoin(domain_json, ","),
      "],\"drop_by_position\":[", absl::StrJoin(drop_json, ","),
      "],\"routing_agreement\":[", absl::StrJoin(agree_json, ","), "]}\n");

  // CSVs.
  std::string spec_csv = "checkpoint,step,layer,specialization,control,ids,occurrences\n";
  std::string agree_csv = "checkpoint,step,layer,token_top1,token_id_table\n";
  std::string drop_csv = "layer,decile,first_choice,second_choice,tokens\n";
  std::string share_csv = "layer,source_index,source,expert,share\n";
  std::string top_csv = "layer,expert,rank,id,piece,count,share\n";
  for (size_t m = 0; m < num_layers; ++m) {
    const LayerResult& res = results[m];
    const int64_t layer = last.layers[m];
    for (size_t c = 0; c < runs.size(); ++c) {
      absl::StrAppendFormat(&spec_csv, "%d,%d,%d,%.6f,%.6f,%d,%d\n", c, runs[c].step, layer,
                            res.spec[c].value, res.control[c].value, res.spec[c].ids,
                            res.spec[c].occurrences);
      absl::StrAppendFormat(&agree_csv, "%d,%d,%d,%.6f,%.6f\n", c, runs[c].step, layer,
                            res.top1_agreement[c], res.table_agreement[c]);
    }
    for (int64_t d = 0; d < kDeciles; ++d) {
      absl::StrAppendFormat(&drop_csv, "%d,%d,%.6f,%.6f,%d\n", layer, d, res.drop.by_choice[0][d],
                            dims.top_k > 1 ? res.drop.by_choice[1][d] : 0.0, res.drop.tokens[d]);
    }
    for (size_t s = 0; s < sources.size(); ++s) {
      for (int64_t e = 0; e < dims.num_experts; ++e)
        absl::StrAppendFormat(&share_csv, "%d,%d,%s,%d,%.6f\n", layer, s, sources[s].name, e,
                              res.share[s][e]);
    }
    for (int64_t e = 0; e < dims.num_experts; ++e) {
      for (size_t i = 0; i < res.top[e].size(); ++i) {
        const TopToken& t = res.top[e][i];
        absl::StrAppendFormat(&top_csv, "%d,%d,%d,%d,%s,%d,%.6f\n", layer, e, i + 1, t.id,
                              CsvPiece(piece(t.id)), t.count, t.share);
      }
    }
  }
  std::vector<std::string> source_label;
  for (const NamedRows& s : sources) source_label.push_back(s.name);
  std::error_code ec;
  std::filesystem::create_directories(options.out_dir, ec);
  if (ec)
    return absl::FailedPreconditionError(
        absl::StrCat("analyze: --out ", options.out_dir, ": ", ec.message()));
  const std::vector<std::pair<std::string, std::string>> files = {
      {"analysis.json", json},
      {"specialization.csv", spec_csv},
      {"routing_agreement.csv", agree_csv},
      {"drop_by_position.csv", drop_csv},
      {"domain_expert_share.csv", share_csv},
      {"top_tokens.csv", top_csv},
      {"plots.gp", GnuplotScript(options.out_dir, last.layers, source_label, dims.top_k,
                                 steps_known)}};
  for (const auto& [name, bytes] : files)
    OPENMOE_RETURN_IF_ERROR(WriteFileAtomically(JoinPath(options.out_dir, name), bytes));

  // The findings in brief.
  for (size_t m = 0; m < num_layers; ++m) {
    const LayerResult& res = results[m];
    log << absl::StrFormat(
        "layer %d: token-id specialisation %.3f (control %.3f, %d ids); first-checkpoint top-1 "
        "agreement with the last %.3f (table %.3f); drop first decile %.3f/%.3f, last %.3f/%.3f "
        "(choice 1/2)\n",
        last.layers[m], res.spec.back().value, res.control.back().value, res.spec.back().ids,
        res.top1_agreement.front(), res.table_agreement.front(), res.drop.by_choice[0].front(),
        dims.top_k > 1 ? res.drop.by_choice[1].front() : 0.0, res.drop.by_choice[0].back(),
        dims.top_k > 1 ? res.drop.by_choice[1].back() : 0.0);
  }
  if (options.plots) {
    if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
      log << "analyze: gnuplot not found: PNGs skipped (apt-get install gnuplot-nox, then `cd "
          << options.out_dir << " && gnuplot plots.gp`)\n";
    } else {
      const std::string cmd = absl::StrCat("cd '", options.out_dir, "' && gnuplot plots.gp");
      if (options.out_dir.find('\'') != std::string::npos || std::system(cmd.c_str()) != 0)
        return absl::InternalError(absl::StrCat("analyze: `", cmd, "` failed"));
    }
  }
  log << "analyze: wrote " << options.out_dir << "/analysis.json, CSVs"
      << (options.plots ? " and PNGs" : "") << "\n";
  return absl::OkStatus();
}

}  // namespace openmoe
