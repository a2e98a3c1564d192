// safetensors files (the format of https://github.com/huggingface/safetensors):
//
//   8 bytes      N, the header length, unsigned little-endian
//   N bytes      JSON: {"<name>": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [b, e]},
//                       ..., "__metadata__": {"<key>": "<string>", ...}}
//                padded with spaces to a multiple of 8 bytes
//   the data     tensor bytes at [b, e) counted from the first byte after the header, row-major,
//                little-endian
//
// The writer writes F32 tensors laid out contiguously in the order given; the reader takes any
// valid file and reads its F32 tensors (other dtypes are listed but refused by ReadF32). Not
// collective; errors name the file and the tensor.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace openmoe {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  int64_t begin = 0, end = 0;  // byte offsets into the data section
};

class SafetensorsWriter {
 public:
  // Writes `path` (as `path`.tmp until Close) with a header for `tensors` (name, shape), F32, in
  // this order, and string metadata.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path,
      const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors,
      const std::map<std::string, std::string>& metadata);
  ~SafetensorsWriter();  // removes the temporary file unless Close succeeded

  // Appends `count` floats of data: the tensors' values in header order, in as many calls as
  // convenient.
  absl::Status Append(const float* data, int64_t count);
  // Checks that every tensor was written in full, fsyncs and renames the file to `path`.
  absl::Status Close();

 private:
  SafetensorsWriter() = default;
  std::string path_, tmp_;
  std::FILE* file_ = nullptr;
  int64_t expected_bytes_ = 0, written_bytes_ = 0;
};

class SafetensorsFile {
 public:
  // Reads and checks the header: JSON syntax, every entry's dtype / shape / offsets (sizes that
  // match the shape for F32, offsets inside the file, no two tensors overlapping).
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsEntry* Find(const std::string& name) const;

  // Elements [first, first + count) of F32 tensor `entry` (row-major) into `out`.
  absl::Status ReadF32(const SafetensorsEntry& entry, int64_t first, int64_t count,
                       float* out) const;

 private:
  std::string path_;
  int64_t data_start_ = 0;
  std::vector<SafetensorsEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace openmoe
