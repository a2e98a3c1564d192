// Loading a job: job files (protobuf text format) merged in order, `--set` overrides, validation.
//
//   openmoe train --job base.pbtxt --job topo_256.pbtxt --set train.steps=10
//
// Each file is parsed on its own (a field given twice in one file is an error) and merged into the
// spec with proto2 MergeFrom: a later file overwrites only the fields it sets, and sub-messages
// merge field by field. Then each `--set field.path=value` is applied in order, then ValidateJob.
// Every error is one line naming the file (with line:column), the `--set` path, or the fields and
// values at fault.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/job.pb.h"

namespace openmoe {

// Loads, merges, overrides and validates. Errors: NotFound for a missing file, InvalidArgument
// for a parse error, a bad `--set`, a failed validation, or a file that sets no field at all
// (empty or comments only) unless `allow_defaults`.
absl::StatusOr<JobSpec> LoadJob(const std::vector<std::string>& job_files,
                                const std::vector<std::string>& sets, bool allow_defaults = false);

// Applies one `field.path=value` override. The path is resolved with the descriptors (an unknown
// component, or a component that is not a message, is an error naming the path); the value is
// written as text format and merged: strings are taken literally (no quotes needed), enums by
// name (or number), bools as true/false, numbers as usual.
absl::Status ApplySet(const std::string& assignment, JobSpec* spec);

// Checks every cross-field rule (positive sizes, divisibility of experts and batch over the
// mesh, groups within one chip, ...). First, and alone: every float/double set anywhere in the
// spec is finite; floats lie in their ranges; sizes that code casts to int32 (BLAS dimensions)
// are at most 2^31 - 1; parameter counts, tokens per step, attention scores and capacity buffers
// fit int64 (so nothing downstream overflows while sizing or allocating). On failure:
// InvalidArgument with one line `job (<description>): <field>=<value> <problem>[; <next>...]`.
absl::Status ValidateJob(const JobSpec& spec, const std::string& job_description = "");

// "a.pbtxt, b.pbtxt --set train.steps=10": how messages name a job.
std::string JobDescription(const std::vector<std::string>& job_files,
                           const std::vector<std::string>& sets = {});

// The resolved spec in text format with every field present (defaults filled in), for printing
// once at start.
std::string DescribeJob(const JobSpec& spec);

}  // namespace openmoe
