#include "launch/checkpoint/manifest.h"

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "launch/checkpoint/tensor_file.h"
#include "model/config.h"

namespace openmoe {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kChecksumPrefix = "# xxh64 ";

int64_t NumElements(const google::protobuf::RepeatedField<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

std::string StepDirName(int64_t step) { return absl::StrFormat("step_%08d", step); }

std::optional<int64_t> ParseStepDirName(std::string_view name_view) {
  absl::string_view name(name_view.data(), name_view.size());
  if (!absl::ConsumePrefix(&name, "step_") || name.size() < 8 || name.size() > 18)
    return std::nullopt;
  for (char c : name)
    if (!absl::ascii_isdigit(c)) return std::nullopt;
  int64_t step = 0;
  if (!absl::SimpleAtoi(name, &step)) return std::nullopt;
  return step;
}

absl::StatusOr<std::vector<CheckpointDir>> ListCheckpoints(const std::string& root) {
  std::vector<CheckpointDir> out;
  std::error_code ec;
  if (!fs::exists(root, ec)) return out;
  if (!fs::is_directory(root, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint.dir=", root, " is not a directory"));
  }
  fs::directory_iterator it(root, ec);
  if (ec) return absl::InternalError(absl::StrCat(root, ": cannot list (", ec.message(), ")"));
  for (const fs::directory_entry& e : it) {
    const std::optional<int64_t> step = ParseStepDirName(e.path().filename().string());
    if (step && e.is_directory(ec)) out.push_back({*step, e.path().string()});
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointDir& a, const CheckpointDir& b) { return a.step > b.step; });
  return out;
}

std::string SerializeManifest(const CheckpointManifest& manifest) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(manifest, &text);
  if (!text.empty() && text.back() != '\n') text += '\n';
  return absl::StrCat(text, std::string(kChecksumPrefix),
                      absl::StrFormat("%016x", Xxh64(text.data(), text.size())), "\n");
}

absl::StatusOr<CheckpointManifest> ParseManifest(std::string_view text, const std::string& path) {
  // The checksum line is the last line; the body is everything before it.
  std::string_view trimmed = text;
  if (!trimmed.empty() && trimmed.back() == '\n') trimmed.remove_suffix(1);
  const size_t line_start =
      trimmed.rfind('\n') == std::string_view::npos ? 0 : trimmed.rfind('\n') + 1;
  absl::string_view last(trimmed.data() + line_start, trimmed.size() - line_start);
  const std::string_view body = text.substr(0, line_start);
  uint64_t stored = 0;
  if (!absl::ConsumePrefix(&last,
                           absl::string_view(kChecksumPrefix.data(), kChecksumPrefix.size())) ||
      last.size() != 16 || !absl::SimpleHexAtoi(last, &stored)) {
    return absl::DataLossError(absl::StrCat(path, ": no checksum line at the end (truncated?)"));
  }
  const uint64_t computed = Xxh64(body.data(), body.size());
  if (computed != stored) {
    return absl::DataLossError(absl::StrFormat(
        "%s: checksum mismatch (xxh64 %016x, the file says %016x)", path, computed, stored));
  }
  CheckpointManifest manifest;
  if (!google::protobuf::TextFormat::ParseFromString(std::string(body), &manifest)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a valid CheckpointManifest"));
  }
  if (manifest.format_version() != kCheckpointFormatVersion) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: format_version=%d, this build reads version %d", path,
                        manifest.format_version(), kCheckpointFormatVersion));
  }
  return manifest;
}

absl::StatusOr<CheckpointManifest> ReadManifest(const std::string& checkpoint_dir) {
  const std::string path = (fs::path(checkpoint_dir) / kManifestFile).string();
  std::error_code ec;
  if (!fs::is_directory(checkpoint_dir, ec)) {
    return absl::NotFoundError(absl::StrCat(checkpoint_dir, ": no such checkpoint directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": missing (an incomplete checkpoint)"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return ParseManifest(buffer.str(), path);
}

absl::Status CheckModelCompatible(const JobSpec& saved, const JobSpec& job) {
  const ModelDims a = DimsFromSpec(saved), b = DimsFromSpec(job);
  struct Field {
    const char* name;
    int64_t saved, job;
  };
  const Field fields[] = {
      {"model.vocab_size (padded to model.vocab_pad_multiple)", a.padded_vocab_size,
       b.padded_vocab_size},
      {"model.num_layers", a.num_layers, b.num_layers},
      {"model.d_model", a.d_model, b.d_model},
      {"model.num_heads", a.num_heads, b.num_heads},
      {"model.head_dim", a.head_dim, b.head_dim},
      {"model.d_ff", a.d_ff, b.d_ff},
      {"model.ffn_form", a.ffn_form, b.ffn_form},
      {"model.num_experts", a.num_experts, b.num_experts},
      {"model.moe_interval", a.moe_interval, b.moe_interval},
      {"model.expert_d_ff (0 means model.d_ff)", a.expert_d_ff, b.expert_d_ff},
      {"model.extra_dense_ffn", a.extra_dense_ffn, b.extra_dense_ffn},
      {"model.num_shared_experts", a.num_shared_experts, b.num_shared_experts},
  };
  for (const Field& f : fields) {
    if (f.saved != f.job) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "incompatible model: %s=%d in the checkpoint, %d in this job", f.name, f.saved, f.job));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTensorIndex(const CheckpointManifest& manifest) {
  // (kind, name) -> expert coverage count per expert id.
  std::map<std::pair<int, std::string>, std::vector<int>> coverage;
  for (const TensorEntry& t : manifest.tensors()) {
    const std::string what =
        absl::StrCat(TensorKind_Name(t.kind()), " ", t.name(), " (", t.file(), ")");
    if (t.dtype() != "F32")
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", what, ": dtype ", t.dtype(), " is not F32"));
    if (t.file().empty() || t.file().find('/') != std::string::npos || t.file()[0] == '.') {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", what, ": bad file name"));
    }
    int64_t elements = NumElements(t.shape());
    if (t.is_expert()) {
      const int64_t experts = t.shape_size() > 0 ? t.shape(0) : 0;
      if (t.expert_begin() < 0 || t.expert_end() > experts || t.expert_begin() >= t.expert_end()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("tensor %s: expert range [%d, %d) outside [0, %d)", what,
                            t.expert_begin(), t.expert_end(), experts));
      }
      elements = elements / experts * (t.expert_end() - t.expert_begin());
      std::vector<int>& seen = coverage[{t.kind(), t.name()}];
      seen.resize(experts, 0);
      for (int64_t e = t.expert_begin(); e < t.expert_end(); ++e) ++seen[e];
    }
    if (t.raw_bytes() != elements * 4) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor %s: raw_bytes=%d, its shape needs %d", what, t.raw_bytes(), elements * 4));
    }
  }
  for (const auto& [key, seen] : coverage) {
    for (size_t e = 0; e < seen.size(); ++e) {
      if (seen[e] != 1) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "tensor %s %s: expert %d is held by %d files (want 1)",
            TensorKind_Name(static_cast<TensorKind>(key.first)), key.second, e, seen[e]));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace openmoe
