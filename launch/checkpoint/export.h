// Weights out of and into the trainer as safetensors: `openmoe export`, and the parameters of a
// fresh run from a file (checkpoint.init_from_safetensors).
//
// The file holds every parameter of the model under its global ParamLayout name, F32, with its
// global shape (expert tensors (num_experts, ...), all experts), in layout order, plus metadata:
// "format": "openmoe", "openmoe.step", "openmoe.job" (the job spec in protobuf text format) and
// "openmoe.layout". Names and layouts are documented in the README. Optimizer state is not
// exported.
//
// Nothing here is collective: export runs in one process; LoadParamsFromSafetensors is called by
// each rank for its own layout.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "launch/checkpoint/safetensors.h"
#include "model/params.h"
#include "proto/job.pb.h"

namespace openmoe {

struct ExportStats {
  int64_t step = 0;
  int64_t tensors = 0;
  int64_t bytes = 0;  // data bytes written
};

// Writes the parameters of checkpoint `checkpoint_dir` (written by any layout) to `out`, reading
// one tensor at a time (memory: the largest tensor). Every file read is checked. A tensor holding
// a NaN or inf fails the export (FailedPrecondition naming the tensor and its first bad flat
// index) unless `allow_nonfinite`. The file is written as `out`.tmp and renamed on success, so a
// failed export leaves no `out` (and an existing one untouched).
absl::StatusOr<ExportStats> ExportSafetensors(const std::string& checkpoint_dir,
                                              const std::string& out,
                                              bool allow_nonfinite = false);

// Fills `params` (layout.total_size()) from safetensors file `path`: shared tensors by name, expert
// tensors at the layout's global expert ids, model pieces as their box of the whole tensor (read
// whole, one tensor at a time). Every parameter must be present, F32, with its global
// shape (FailedPrecondition naming the tensor otherwise), and the file must hold no tensor the
// model lacks.
absl::Status LoadParamsFromSafetensors(const std::string& path, const ParamLayout& layout,
                                       float* params);

// The job spec an exported file carries in its metadata ("openmoe.job"); NotFound when absent.
absl::StatusOr<JobSpec> JobFromSafetensors(const SafetensorsFile& file);

}  // namespace openmoe
