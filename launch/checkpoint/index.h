// What a rank's buffers hold, in checkpoint terms: every tensor (parameter, and optimizer state
// per parameter) with its global shape, and where this rank's piece of it lives in the flat
// buffers. The writer and the reader both walk this list, so that they agree by construction.
//
// Parameters come from ParamLayout (shared tensors whole; expert tensors as the rank's contiguous
// range of global expert ids). Adafactor state follows the parameter order: Adafactor keeps one
// slice per matrix (per expert for expert tensors) in layout order, so each parameter's state is
// one contiguous range of Adafactor::state(), `count` slices of equal size. AdamW state is m then
// v, each with the parameter buffer's layout: a parameter's m and v are its own shape and shard.
//
// Pure functions of the layout and optimizer; not collective.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/optimizer.h"
#include "model/params.h"
#include "proto/checkpoint.pb.h"

namespace openmoe {

struct LocalTensor {
  std::string name;  // the parameter's global name
  TensorKind kind = TENSOR_PARAM;
  std::vector<int64_t> global_shape;  // experts: (num_experts, ...)
  bool is_expert = false;
  bool factored = false;     // TENSOR_ADAFACTOR only
  int64_t first_expert = 0;  // experts: global id of the first local one
  int64_t num_experts = 1;   // experts: how many this rank holds; shared: 1
  int64_t per_expert = 0;    // floats per expert (shared: the whole tensor)
  int64_t offset = 0;        // into params (TENSOR_PARAM) or Optimizer::state()
  int64_t size() const { return num_experts * per_expert; }
};

// The parameters of `layout`, then (optimizer non-null) their optimizer states in layout order:
// Adafactor's, or AdamW's m of every parameter then v of every parameter.
std::vector<LocalTensor> LocalTensors(const ParamLayout& layout, const Optimizer* optimizer);

// File name of a tensor piece: "param.<name>.zst", "adafactor.<name>.zst", "adamw_m.<name>.zst",
// "adamw_v.<name>.zst"; expert pieces add
// ".experts_<first>-<last>" (inclusive ids), e.g.
// "param.layers.1.moe.experts.wi_0.experts_0-3.zst".
std::string TensorFileName(const LocalTensor& t);

// "param", "adafactor state", "adamw m", "adamw v": how messages name a tensor kind.
const char* TensorKindName(TensorKind kind);
// "param", "adafactor", "adamw_m", "adamw_v": the file-name prefix.
const char* TensorFilePrefix(TensorKind kind);
// The optimizer an optimizer-state kind belongs to (not for TENSOR_PARAM).
OptimizerKind OptimizerOfTensor(TensorKind kind);

}  // namespace openmoe
