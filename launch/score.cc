#include "launch/score.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/batch.h"
#include "core/check.h"
#include "core/tensor.h"
#include "launch/checkpoint/checkpoint.h"
#include "launch/job_loader.h"
#include "launch/source_rows.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/loss_summary.h"
#include "model/params.h"

namespace openmoe {
namespace {

constexpr char kNpyMagic[] = "\x93NUMPY";
constexpr int64_t kTokensPerCall = 8192;  // forward chunk (activations scale with it)

absl::Status NpyError(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// The value of `key` in a numpy header dict literal, e.g. "'<i4'" or "(3, 4)" or "False".
std::string HeaderValue(absl::string_view header, const std::string& key) {
  const size_t k = header.find(absl::StrCat("'", key, "'"));
  if (k == absl::string_view::npos) return "";
  size_t p = header.find(':', k);
  if (p == absl::string_view::npos) return "";
  ++p;
  while (p < header.size() && header[p] == ' ') ++p;
  size_t end = p;
  if (p < header.size() && header[p] == '(') {
    end = header.find(')', p);
    return end == absl::string_view::npos ? "" : std::string(header.substr(p, end - p + 1));
  }
  while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  return std::string(absl::StripAsciiWhitespace(header.substr(p, end - p)));
}

double Ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

std::string Doubles(const std::vector<double>& v) {
  return absl::StrJoin(v, ",",
                       [](std::string* out, double x) { absl::StrAppendFormat(out, "%.8g", x); });
}

}  // namespace

absl::StatusOr<TokenArray> ReadNpyTokens(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  if (bytes.size() < 10 || bytes.compare(0, 6, kNpyMagic) != 0)
    return NpyError(path, "not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8;
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return NpyError(path, "truncated header");
    for (int b = 3; b >= 0; --b)
      header_len = header_len << 8 | static_cast<unsigned char>(bytes[8 + b]);
    header_start = 12;
  } else {
    return NpyError(path, absl::StrCat("unsupported .npy version ", major));
  }
  if (header_start + header_len > bytes.size()) return NpyError(path, "truncated header");
  const absl::string_view header(bytes.data() + header_start, header_len);
  const std::string descr = HeaderValue(header, "descr");
  const std::string fortran = HeaderValue(header, "fortran_order");
  const std::string shape = HeaderValue(header, "shape");
  int64_t item = 0;
  if (descr == "'<i4'") {
    item = 4;
  } else if (descr == "'<i8'") {
    item = 8;
  } else {
    return NpyError(path, absl::StrCat("dtype ", descr.empty() ? "?" : descr,
                                       " is not int32 ('<i4') or int64 ('<i8')"));
  }
  if (fortran != "False")
    return NpyError(path, "fortran_order arrays are not supported (save a C-order array)");
  std::vector<int64_t> dims;
  for (absl::string_view d : absl::StrSplit(absl::StripSuffix(absl::StripPrefix(shape, "("), ")"),
                                            ',', absl::SkipWhitespace())) {
    int64_t x = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(d), &x) || x < 0)
      return NpyError(path, absl::StrCat("bad shape ", shape));
    dims.push_back(x);
  }
  if (dims.size() != 2 || dims[0] == 0 || dims[1] < 2) {
    return NpyError(path, absl::StrCat("shape ", shape,
                                       " is not [rows, seq_len] with rows >= 1 and seq_len >= 2"));
  }
  TokenArray t;
  t.rows = dims[0];
  t.seq_len = dims[1];
  const int64_t n = t.rows * t.seq_len;
  const size_t data_start = header_start + header_len;
  if (static_cast<int64_t>(bytes.size() - data_start) != n * item) {
    return NpyError(
        path, absl::StrFormat("holds %d data bytes, shape %s needs %d (truncated?)",
                              static_cast<int64_t>(bytes.size() - data_start), shape, n * item));
  }
  t.tokens.resize(static_cast<size_t>(n));
  const char* data = bytes.data() + data_start;
  if (item == 4) {
    std::memcpy(t.tokens.data(), data, static_cast<size_t>(n) * 4);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      int64_t v;
      std::memcpy(&v, data + 8 * i, 8);
      if (v < INT32_MIN || v > INT32_MAX) {
        return NpyError(path, absl::StrFormat("token %d at row %d, column %d does not fit int32", v,
                                              i / t.seq_len, i % t.seq_len));
      }
      t.tokens[i] = static_cast<int32_t>(v);
    }
  }
  return t;
}

absl::Status WriteNpyTokens(const std::string& path, const TokenArray& tokens) {
  std::string header = absl::StrFormat(
      "{'descr': '<i4', 'fortran_order': False, 'shape': (%d, %d), }", tokens.rows, tokens.seq_len);
  // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  out.write(kNpyMagic, 6);
  const char version[4] = {1, 0, static_cast<char>(header.size() & 0xff),
                           static_cast<char>(header.size() >> 8)};
  out.write(version, 4);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(tokens.tokens.data()),
            static_cast<std::streamsize>(tokens.tokens.size() * 4));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::StatusOr<ScoreResult> ScoreTokens(const JobSpec& spec, const float* params,
                                        const TokenArray& tokens, RowForm form,
                                        const ExpertBias* expert_bias) {
  OPENMOE_RETURN_IF_ERROR(CheckRows(tokens, form));
  const ModelDims dims = DimsFromSpec(spec);
  for (int64_t i = 0; i < static_cast<int64_t>(tokens.tokens.size()); ++i) {
    const int32_t v = tokens.tokens[i];
    if (v < 0 || v >= dims.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("token %d at row %d, column %d is outside [0, model.vocab_size=%d)", v,
                          i / tokens.seq_len, i % tokens.seq_len, dims.vocab_size));
    }
  }
  const ParamLayout layout(dims);
  RoutingConfig routing = RoutingFromSpec(spec, /*eval=*/true);
  routing.expert_bias = expert_bias;
  Decoder decoder(layout, routing);
  const int64_t group = dims.num_experts > 0 ? spec.router().group_size() : 1;
  // Rows per call: a whole number of routing groups, about kTokensPerCall tokens.
  const int64_t unit = group / std::gcd(group, tokens.seq_len);
  const int64_t per_call = unit * std::max<int64_t>(1, kTokensPerCall / (unit * tokens.seq_len));
  const int64_t total_rows = (tokens.rows + unit - 1) / unit * unit;

  DecoderSums sums;
  LossScales scales;  // zero: only the sums are used (no backward)
  scales.output_z_weight = spec.loss().output_z_loss_weight();
  for (int64_t row = 0; row < total_rows; row += per_call) {
    const Batch batch = RowsBatch(tokens, row, std::min(per_call, total_rows - row), form);
    sums.Add(decoder.Forward(params, batch, scales, spec.logging().position_buckets()));
  }
  ScoreResult r = ScoreFromSums(spec, sums, tokens.rows, tokens.seq_len, total_rows - tokens.rows);
  r.form = form;
  return r;
}

ScoreResult ScoreFromSums(const JobSpec& spec, const DecoderSums& sums, int64_t rows,
                          int64_t seq_len, int64_t padded_rows) {
  const ModelDims dims = DimsFromSpec(spec);
  ScoreResult r;
  r.rows = rows;
  r.seq_len = seq_len;
  r.padded_rows = padded_rows;
  r.capacity_factor = RoutingFromSpec(spec, /*eval=*/true).capacity_factor;
  // The loss terms as the trainer's metrics report them (model/loss_summary.h).
  const LossSummary losses = SummarizeLosses(
      sums, LossCountsFor(spec, sums.lm.weight, (rows + padded_rows) * seq_len),
      LossWeightsFor(spec));
  r.target_tokens = losses.target_tokens;
  r.cross_entropy = losses.cross_entropy;
  r.output_z_loss = losses.output_z_loss;
  r.accuracy = losses.accuracy;
  r.load_balance_loss = losses.load_balance_loss;
  r.router_z_loss = losses.router_z_loss;
  r.loss = losses.objective;
  int64_t routed = 0, kept = 0, tokens_seen = 0, fully_dropped = 0;
  r.drop_fraction_by_choice.assign(dims.num_experts > 0 ? dims.top_k : 0, 0.0);
  std::vector<int64_t> dropped_by_choice(r.drop_fraction_by_choice.size(), 0);
  for (const LayerLossSummary& layer_losses : losses.layers) {
    const int64_t layer = layer_losses.layer;
    const RoutingStats& st = sums.routing[layer];
    LayerScore ls;
    ls.layer = layer;
    int64_t layer_routed = 0, layer_kept = 0;
    for (int64_t v : st.routed_per_expert) layer_routed += v;
    for (int64_t v : st.kept_per_expert) layer_kept += v;
    ls.drop_fraction =
        1.0 - Ratio(static_cast<double>(layer_kept), static_cast<double>(layer_routed));
    for (size_t j = 0; j < st.dropped_by_choice.size(); ++j) {
      ls.drop_fraction_by_choice.push_back(
          Ratio(static_cast<double>(st.dropped_by_choice[j]), st.tokens));
      if (j < dropped_by_choice.size()) dropped_by_choice[j] += st.dropped_by_choice[j];
    }
    ls.fully_dropped_fraction = Ratio(static_cast<double>(st.tokens_fully_dropped), st.tokens);
    ls.load_balance_loss = layer_losses.load_balance_loss;
    ls.router_z_loss = layer_losses.router_z_loss;
    routed += layer_routed;
    kept += layer_kept;
    tokens_seen += st.tokens;
    fully_dropped += st.tokens_fully_dropped;
    r.layers.push_back(std::move(ls));
  }
  r.drop_fraction =
      routed > 0 ? 1.0 - Ratio(static_cast<double>(kept), static_cast<double>(routed)) : 0.0;
  for (size_t j = 0; j < dropped_by_choice.size(); ++j) {
    r.drop_fraction_by_choice[j] =
        Ratio(static_cast<double>(dropped_by_choice[j]), static_cast<double>(tokens_seen));
  }
  r.fully_dropped_fraction =
      Ratio(static_cast<double>(fully_dropped), static_cast<double>(tokens_seen));
  return r;
}

std::string ScoreJson(const ScoreResult& r) {
  std::string out = absl::StrFormat(
      "{\"rows\":%d,\"seq_len\":%d,\"padded_rows\":%d,\"form\":\"%s\",\"target_tokens\":%.0f,"
      "\"capacity_factor\":%."
      "6g,"
      "\"cross_entropy\":%.8g,\"perplexity\":%.8g,\"output_z_loss\":%.8g,\"load_balance_loss\":%."
      "8g,"
      "\"router_z_loss\":%.8g,\"loss\":%.8g,\"accuracy\":%.6g,\"drop_fraction\":%.6g,"
      "\"drop_fraction_by_choice\":[%s],\"fully_dropped_fraction\":%.6g,\"moe_layers\":[",
      r.rows, r.seq_len, r.padded_rows, RowFormName(r.form), r.target_tokens, r.capacity_factor,
      r.cross_entropy, std::exp(r.cross_entropy), r.output_z_loss, r.load_balance_loss,
      r.router_z_loss, r.loss, r.accuracy, r.drop_fraction, Doubles(r.drop_fraction_by_choice),
      r.fully_dropped_fraction);
  for (size_t i = 0; i < r.layers.size(); ++i) {
    const LayerScore& l = r.layers[i];
    absl::StrAppendFormat(
        &out,
        "%s{\"layer\":%d,\"drop_fraction\":%.6g,\"drop_fraction_by_choice\":[%s],"
        "\"fully_dropped_fraction\":%.6g,\"load_balance_loss\":%.8g,\"router_z_loss\":%.8g}",
        i ? "," : "", l.layer, l.drop_fraction, Doubles(l.drop_fraction_by_choice),
        l.fully_dropped_fraction, l.load_balance_loss, l.router_z_loss);
  }
  return out + "]}";
}

std::string ScoreText(const ScoreResult& r) {
  std::string out = absl::StrFormat(
      "rows %d x seq_len %d (%d padding rows), %s form, %.0f target tokens, eval capacity factor "
      "%.3g\n"
      "cross_entropy      %.6f (perplexity %.4f)\n"
      "output_z_loss      %.6f\n"
      "load_balance_loss  %.6f\n"
      "router_z_loss      %.6f\n"
      "loss               %.6f (the training objective with the job's weights)\n"
      "accuracy           %.4f\n"
      "drop_fraction      %.4f (by choice: %s; every choice dropped: %.4f)\n",
      r.rows, r.seq_len, r.padded_rows, RowFormName(r.form), r.target_tokens, r.capacity_factor,
      r.cross_entropy, std::exp(r.cross_entropy), r.output_z_loss, r.load_balance_loss,
      r.router_z_loss, r.loss, r.accuracy, r.drop_fraction, Doubles(r.drop_fraction_by_choice),
      r.fully_dropped_fraction);
  for (const LayerScore& l : r.layers) {
    absl::StrAppendFormat(
        &out, "  layer %d: drop %.4f (by choice: %s), load_balance %.6f, router_z %.6f\n", l.layer,
        l.drop_fraction, Doubles(l.drop_fraction_by_choice), l.load_balance_loss, l.router_z_loss);
  }
  return out;
}

absl::Status RunScore(const ScoreOptions& options, std::ostream& out) {
  std::error_code ec;
  const bool is_dir = std::filesystem::is_directory(options.checkpoint, ec);
  JobSpec spec;
  std::unique_ptr<CheckpointReader> reader;
  std::unique_ptr<SafetensorsFile> weights;
  if (is_dir) {
    absl::StatusOr<CheckpointReader> opened = CheckpointReader::Open(options.checkpoint);
    if (!opened.ok()) return opened.status();
    reader = std::make_unique<CheckpointReader>(*std::move(opened));
    spec = reader->manifest().job();
  } else {
    absl::StatusOr<SafetensorsFile> opened = SafetensorsFile::Open(options.checkpoint);
    if (!opened.ok()) return opened.status();
    weights = std::make_unique<SafetensorsFile>(*std::move(opened));
    if (options.job_files.empty()) {
      absl::StatusOr<JobSpec> embedded = JobFromSafetensors(*weights);
      if (!embedded.ok()) return embedded.status();
      spec = *embedded;
    }
  }
  if (!options.job_files.empty()) {
    absl::StatusOr<JobSpec> loaded = LoadJob(options.job_files, options.sets);
    if (!loaded.ok()) return loaded.status();
    if (reader) {
      const absl::Status compatible = CheckModelCompatible(reader->manifest().job(), *loaded);
      if (!compatible.ok())
        return absl::Status(compatible.code(), absl::StrCat("checkpoint ", options.checkpoint, ": ",
                                                            compatible.message()));
    }
    spec = *loaded;
  } else {
    for (const std::string& s : options.sets) OPENMOE_RETURN_IF_ERROR(ApplySet(s, &spec));
  }

  absl::StatusOr<TokenArray> tokens = ReadNpyTokens(options.tokens);
  if (!tokens.ok()) return tokens.status();
  const ParamLayout layout(DimsFromSpec(spec));
  Tensor params({layout.total_size()});
  std::unique_ptr<ExpertBias> bias;
  if (reader) {
    OPENMOE_RETURN_IF_ERROR(reader->LoadInto(layout, params.data(), nullptr));
    std::string warning;
    OPENMOE_ASSIGN_OR_RETURN(bias, ReadExpertBias(*reader, spec, &warning));
    if (!warning.empty()) std::cerr << "score: " << warning << "\n";
  } else {
    OPENMOE_RETURN_IF_ERROR(LoadParamsFromSafetensors(options.checkpoint, layout, params.data()));
  }
  absl::StatusOr<ScoreResult> result =
      ScoreTokens(spec, params.data(), *tokens, options.form, bias.get());
  if (!result.ok())
    return absl::Status(result.status().code(),
                        absl::StrCat(options.tokens, ": ", result.status().message()));
  out << (options.json ? ScoreJson(*result) + "\n" : ScoreText(*result));
  return absl::OkStatus();
}

}  // namespace openmoe
