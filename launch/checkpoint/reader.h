// Reading a checkpoint directory: the manifest, and any piece of any tensor by global name, global
// expert id and model piece, whatever layout wrote it.
//
// Not collective: each process reads what its own layout holds (a rank whose experts span several
// files reads each of them; files of a range wider than its experts are read whole and sliced).
// Every file read is checked against the manifest (size, decompressed size, XXH64 checksum).
// Errors name the checkpoint and the file or tensor: DataLoss for corrupted or truncated data,
// NotFound for a missing file, FailedPrecondition for a tensor the job needs that the checkpoint
// does not hold in that shape.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "launch/checkpoint/index.h"
#include "model/expert_bias.h"
#include "model/optimizer.h"
#include "model/params.h"
#include "proto/checkpoint.pb.h"

namespace openmoe {

class CheckpointReader {
 public:
  // Reads and checks `dir`'s manifest (its checksum and its tensor index). A `dir` holding
  // checkpoints (a checkpoint.dir) is NotFound naming the newest of them.
  static absl::StatusOr<CheckpointReader> Open(const std::string& dir);
  // From a manifest already read and checked (e.g. broadcast by rank 0).
  CheckpointReader(std::string dir, CheckpointManifest manifest);

  const std::string& dir() const { return dir_; }
  const CheckpointManifest& manifest() const { return manifest_; }

  // Reads the piece `t` describes (a shared tensor whole, or experts
  // [t.first_expert, t.first_expert + t.num_experts); of a model piece its box) into out
  // (t.size() floats). A model piece reads the whole tensor and keeps its box (memory: one whole
  // tensor of its experts).
  absl::Status Read(const LocalTensor& t, float* out) const;
  // The whole tensor over the model axis, of t's experts, into out (t.file_size() floats).
  absl::Status ReadWhole(const LocalTensor& t, float* out) const;

  // Every parameter of `layout` into `params` (layout.total_size()), and, when `optimizer` is
  // non-null, its state. Every tensor of the checkpoint must be one the model has; optimizer state
  // written by another optimizer (Adafactor vs AdamW) fails naming the tensor and
  // train.optimizer.
  absl::Status LoadInto(const ParamLayout& layout, float* params, Optimizer* optimizer) const;

  // A shared fp32 tensor of trainer state kept beside the model (Trainer::CheckpointExtras), by
  // its full name: false (out untouched) when the checkpoint holds none, else read into out
  // (prod(shape) floats).
  absl::StatusOr<bool> ReadExtra(const std::string& name, const std::vector<int64_t>& shape,
                                 float* out) const;

  // Reads every file the manifest lists and checks it (for `--resume` diagnostics and tests).
  absl::Status VerifyAllFiles() const;

  // "<dir>/<file>".
  std::string PathOf(const TensorEntry& entry) const;

 private:
  void BuildIndex();
  std::string dir_;
  CheckpointManifest manifest_;
  // (kind, name) -> indices into manifest_.tensors() of the entries holding it (one for a shared
  // tensor, one per expert range).
  std::map<std::pair<int, std::string>, std::vector<int>> index_;
};

// The selection biases (model/expert_bias.h) a checkpoint of `spec` holds, for routing outside
// the trainer (score, analyze): null when the job has none (router.bias_update_rate 0, or no
// experts); zeros, with the reason in *warning, when the checkpoint holds none.
absl::StatusOr<std::unique_ptr<ExpertBias>> ReadExpertBias(const CheckpointReader& reader,
                                                           const JobSpec& spec,
                                                           std::string* warning);

}  // namespace openmoe
