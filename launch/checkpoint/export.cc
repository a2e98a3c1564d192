#include "launch/checkpoint/export.h"

#include <google/protobuf/text_format.h>

#include <cmath>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "launch/checkpoint/index.h"
#include "launch/checkpoint/reader.h"
#include "model/config.h"

namespace openmoe {
namespace {

constexpr char kLayoutNote[] =
    "row-major float32; a matrix W of shape (in, out) is applied as y = x @ W; expert tensors are "
    "(num_experts, ...) with expert e at index e; names and layouts: README, section Checkpoints";

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::StatusOr<ExportStats> ExportSafetensors(const std::string& checkpoint_dir,
                                              const std::string& out, bool allow_nonfinite) {
  absl::StatusOr<CheckpointReader> reader = CheckpointReader::Open(checkpoint_dir);
  if (!reader.ok()) return reader.status();
  const CheckpointManifest& manifest = reader->manifest();
  const ParamLayout layout(DimsFromSpec(manifest.job()));  // all experts; allocates nothing
  const std::vector<LocalTensor> tensors = LocalTensors(layout, nullptr);

  std::vector<std::pair<std::string, std::vector<int64_t>>> header;
  for (const LocalTensor& t : tensors) header.emplace_back(t.name, t.global_shape);
  std::string job_text;
  google::protobuf::TextFormat::PrintToString(manifest.job(), &job_text);
  const std::map<std::string, std::string> metadata = {
      {"format", "openmoe"},
      {"openmoe.step", absl::StrCat(manifest.step())},
      {"openmoe.job", job_text},
      {"openmoe.layout", kLayoutNote}};
  absl::StatusOr<std::unique_ptr<SafetensorsWriter>> writer =
      SafetensorsWriter::Create(out, header, metadata);
  if (!writer.ok()) return writer.status();

  ExportStats stats;
  stats.step = manifest.step();
  std::vector<float> buffer;
  for (const LocalTensor& t : tensors) {
    buffer.resize(static_cast<size_t>(t.size()));
    if (absl::Status s = reader->Read(t, buffer.data()); !s.ok()) return s;
    if (!allow_nonfinite) {
      for (size_t i = 0; i < buffer.size(); ++i) {
        if (!std::isfinite(buffer[i])) {
          return absl::FailedPreconditionError(absl::StrCat(
              checkpoint_dir, ": tensor ", t.name, " ", ShapeString(t.global_shape), " holds ",
              buffer[i], " at flat index ", i, "; nothing written (--allow_nonfinite exports it)"));
        }
      }
    }
    if (absl::Status s = (*writer)->Append(buffer.data(), t.size()); !s.ok()) return s;
    ++stats.tensors;
    stats.bytes += 4 * t.size();
  }
  if (absl::Status s = (*writer)->Close(); !s.ok()) return s;
  return stats;
}

absl::Status LoadParamsFromSafetensors(const std::string& path, const ParamLayout& layout,
                                       float* params) {
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  std::set<std::string> names;
  for (const LocalTensor& t : LocalTensors(layout, nullptr)) {
    names.insert(t.name);
    const SafetensorsEntry* e = file->Find(t.name);
    if (e == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": no tensor ", t.name, " (the model needs ", ShapeString(t.global_shape), ")"));
    }
    if (e->shape != t.global_shape) {
      return absl::FailedPreconditionError(absl::StrCat(path, ": tensor ", t.name, " has shape ",
                                                        ShapeString(e->shape), ", the model needs ",
                                                        ShapeString(t.global_shape)));
    }
    if (!t.model_piece) {
      if (absl::Status s =
              file->ReadF32(*e, t.first_expert * t.per_expert, t.size(), params + t.offset);
          !s.ok()) {
        return s;
      }
      continue;
    }
    // A model piece: the whole tensor of this layout's experts, then the piece's box of it.
    std::vector<float> whole(static_cast<size_t>(t.file_size()));
    if (absl::Status s =
            file->ReadF32(*e, t.first_expert * t.whole_per_expert, t.file_size(), whole.data());
        !s.ok()) {
      return s;
    }
    CopyWholeToPiece(t, whole.data(), params + t.offset);
  }
  for (const SafetensorsEntry& e : file->tensors()) {
    if (!names.count(e.name)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": tensor ", e.name, " is not a parameter of this model"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<JobSpec> JobFromSafetensors(const SafetensorsFile& file) {
  auto it = file.metadata().find("openmoe.job");
  if (it == file.metadata().end()) {
    return absl::NotFoundError(
        absl::StrCat(file.path(), ": no openmoe.job metadata (pass the model's --job)"));
  }
  JobSpec spec;
  if (!google::protobuf::TextFormat::ParseFromString(it->second, &spec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": openmoe.job metadata is not a valid job spec"));
  }
  return spec;
}

}  // namespace openmoe
