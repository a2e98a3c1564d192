#include "launch/checkpoint/reader.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/check.h"
#include "launch/checkpoint/manifest.h"
#include "launch/checkpoint/tensor_file.h"
#include "launch/checkpoint/threads.h"
#include "launch/trainer.h"

namespace openmoe {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status Prefixed(const std::string& dir, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat("checkpoint ", dir, ": ", s.message()));
}

}  // namespace

absl::StatusOr<CheckpointReader> CheckpointReader::Open(const std::string& dir) {
  absl::StatusOr<CheckpointManifest> manifest = ReadManifest(dir);
  if (!manifest.ok()) {
    // A directory of checkpoints given where one checkpoint was expected: say which to pick.
    absl::StatusOr<std::vector<CheckpointDir>> inside = ListCheckpoints(dir);
    if (manifest.status().code() == absl::StatusCode::kNotFound && inside.ok() &&
        !inside->empty()) {
      return absl::NotFoundError(absl::StrCat(
          dir, " is a directory of checkpoints, not a checkpoint; pass one of them, e.g. ",
          inside->front().path, " (the newest)"));
    }
    return manifest.status();  // names the manifest file
  }
  const absl::Status index = CheckTensorIndex(*manifest);
  if (!index.ok()) return Prefixed(dir, index);
  return CheckpointReader(dir, *std::move(manifest));
}

CheckpointReader::CheckpointReader(std::string dir, CheckpointManifest manifest)
    : dir_(std::move(dir)), manifest_(std::move(manifest)) {
  BuildIndex();
}

void CheckpointReader::BuildIndex() {
  index_.clear();
  for (int i = 0; i < manifest_.tensors_size(); ++i) {
    const TensorEntry& e = manifest_.tensors(i);
    index_[{e.kind(), e.name()}].push_back(i);
  }
}

std::string CheckpointReader::PathOf(const TensorEntry& entry) const {
  return (std::filesystem::path(dir_) / entry.file()).string();
}

absl::StatusOr<bool> CheckpointReader::ReadExtra(const std::string& name,
                                                 const std::vector<int64_t>& shape,
                                                 float* out) const {
  bool held = false;
  for (const TensorEntry& e : manifest_.tensors())
    held = held || (e.kind() == TENSOR_PARAM && e.name() == name);
  if (!held) return false;
  LocalTensor t;
  t.name = name;
  t.global_shape = shape;
  t.per_expert = 1;
  for (int64_t n : shape) t.per_expert *= n;
  OPENMOE_RETURN_IF_ERROR(Read(t, out));
  return true;
}

absl::Status CheckpointReader::Read(const LocalTensor& t, float* out) const {
  if (!t.model_piece) return ReadWhole(t, out);
  // A model piece: the whole tensor (of this rank's experts), then this piece's box of it.
  std::vector<float> whole(static_cast<size_t>(t.file_size()));
  OPENMOE_RETURN_IF_ERROR(ReadWhole(t, whole.data()));
  CopyWholeToPiece(t, whole.data(), out);
  return absl::OkStatus();
}

absl::Status CheckpointReader::ReadWhole(const LocalTensor& t, float* out) const {
  auto it = index_.find({t.kind, t.name});
  if (it == index_.end()) {
    return absl::FailedPreconditionError(absl::StrCat("checkpoint ", dir_, ": no ",
                                                      TensorKindName(t.kind), " ", t.name,
                                                      " (the model needs it)"));
  }
  const TensorEntry& any = manifest_.tensors(it->second.front());
  if (t.kind == TENSOR_ADAFACTOR && any.factored() != t.factored) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", dir_, ": adafactor state of ", t.name, " is ",
        any.factored() ? "factored" : "not factored",
        " but this job's optimizer.factored / optimizer.min_dim_size_to_factor make it ",
        t.factored ? "factored" : "not factored"));
  }
  const std::vector<int64_t> shape(any.shape().begin(), any.shape().end());
  if (shape != t.global_shape || any.is_expert() != t.is_expert) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", dir_, ": ", TensorKindName(t.kind), " ", t.name, " has shape ",
                     ShapeString(shape), any.is_expert() ? " (experts)" : "",
                     ", this job's model needs ", ShapeString(t.global_shape)));
  }
  if (!t.is_expert) return ReadTensorFile(PathOf(any), any, out);  // errors name the file

  const int64_t lo = t.first_expert, hi = t.first_expert + t.num_experts;
  const int64_t per_expert = t.file_per_expert();
  int64_t covered = 0;
  std::vector<float> staging;
  for (int i : it->second) {
    const TensorEntry* e = &manifest_.tensors(i);
    const int64_t b = std::max(lo, e->expert_begin()), end = std::min(hi, e->expert_end());
    if (b >= end) continue;
    covered += end - b;
    const int64_t file_experts = e->expert_end() - e->expert_begin();
    if (e->expert_begin() == b && e->expert_end() == end) {  // exactly what we need: no copy
      OPENMOE_RETURN_IF_ERROR(ReadTensorFile(PathOf(*e), *e, out + (b - lo) * per_expert));
      continue;
    }
    staging.resize(static_cast<size_t>(file_experts * per_expert));
    OPENMOE_RETURN_IF_ERROR(ReadTensorFile(PathOf(*e), *e, staging.data()));
    std::memcpy(out + (b - lo) * per_expert, staging.data() + (b - e->expert_begin()) * per_expert,
                static_cast<size_t>((end - b) * per_expert) * sizeof(float));
  }
  if (covered != t.num_experts) {  // CheckTensorIndex makes this unreachable for checked manifests
    return absl::FailedPreconditionError(absl::StrCat("checkpoint ", dir_, ": ",
                                                      TensorKindName(t.kind), " ", t.name,
                                                      " does not hold experts ", lo, "..", hi - 1));
  }
  return absl::OkStatus();
}

absl::Status CheckpointReader::LoadInto(const ParamLayout& layout, float* params,
                                        Optimizer* optimizer) const {
  const std::vector<LocalTensor> tensors = LocalTensors(layout, optimizer);
  std::set<std::pair<int, std::string>> wanted;
  for (const LocalTensor& t : tensors) wanted.insert({t.kind, t.name});
  for (const auto& [key, entries] : index_) {
    const auto kind = static_cast<TensorKind>(key.first);
    if (kind != TENSOR_PARAM && optimizer == nullptr) continue;
    // The state of another optimizer cannot seed this one: say so rather than "not in the model".
    if (kind != TENSOR_PARAM && OptimizerOfTensor(kind) != optimizer->kind()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint ", dir_, ": holds ", TensorKindName(kind), " ", key.second,
          " but this job's train.optimizer is ", OptimizerKind_Name(optimizer->kind()),
          "; resume with the optimizer it was written with, or start from its weights "
          "(openmoe export, then checkpoint.init_from_safetensors)"));
    }
    // Trainer state outside the model (Trainer::CheckpointExtras) is not the model's to load.
    if (kind == TENSOR_PARAM && absl::StartsWith(key.second, kCheckpointExtraPrefix)) continue;
    if (!wanted.count(key)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint ", dir_, ": holds ", TensorKindName(static_cast<TensorKind>(key.first)), " ",
          key.second, ", which this job's model does not have"));
    }
  }
  return ForEachInParallel(
      static_cast<int64_t>(tensors.size()), CheckpointThreads(), [&](int64_t i) {
        const LocalTensor& t = tensors[i];
        float* base = t.kind == TENSOR_PARAM ? params : optimizer->state().data();
        return Read(t, base + t.offset);
      });
}

absl::Status CheckpointReader::VerifyAllFiles() const {
  return ForEachInParallel(manifest_.tensors_size(), CheckpointThreads(), [&](int64_t i) {
    const TensorEntry& e = manifest_.tensors(static_cast<int>(i));
    std::vector<float> buffer(static_cast<size_t>(e.raw_bytes() / 4));
    return ReadTensorFile(PathOf(e), e, buffer.data());
  });
}

absl::StatusOr<std::unique_ptr<ExpertBias>> ReadExpertBias(const CheckpointReader& reader,
                                                           const JobSpec& spec,
                                                           std::string* warning) {
  const ModelDims dims = DimsFromSpec(spec);
  if (dims.num_experts == 0 || spec.router().bias_update_rate() <= 0) return nullptr;
  auto bias = std::make_unique<ExpertBias>(dims.num_layers, dims.num_experts,
                                           spec.router().bias_update_rate());
  OPENMOE_ASSIGN_OR_RETURN(
      const bool held,
      reader.ReadExtra(kExpertBiasCheckpointName, {dims.num_layers, dims.num_experts},
                       bias->data()));
  if (!held) {
    *warning = absl::StrCat("checkpoint ", reader.dir(), " holds no ", kExpertBiasCheckpointName,
                            ": routing without selection biases");
  }
  return bias;
}

}  // namespace openmoe
