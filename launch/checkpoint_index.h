// What a rank's buffers hold, in checkpoint terms: every tensor (parameter, and Adafactor state
// per parameter) with its global shape, and where this rank's piece of it lives in the flat
// buffers. The writer and the reader both walk this list, so that they agree by construction.
//
// Parameters come from ParamLayout (shared tensors whole; expert tensors as the rank's contiguous
// range of global expert ids). Adafactor state follows the parameter order: Adafactor keeps one
// slice per matrix (per expert for expert tensors) in layout order, so each parameter's state is
// one contiguous range of Adafactor::state(), `count` slices of equal size.
//
// Pure functions of the layout and optimizer; not collective.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/adafactor.h"
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
  int64_t offset = 0;        // into params (TENSOR_PARAM) or optimizer state
  int64_t size() const { return num_experts * per_expert; }
};

// The parameters of `layout`, then (optimizer non-null) their Adafactor states, in layout order.
std::vector<LocalTensor> LocalTensors(const ParamLayout& layout, const Adafactor* optimizer);

// File name of a tensor piece: "param.<name>.zst", "adafactor.<name>.zst"; expert pieces add
// ".experts_<first>-<last>" (inclusive ids), e.g.
// "param.layers.1.moe.experts.wi_0.experts_0-3.zst".
std::string TensorFileName(const LocalTensor& t);

// "param" or "adafactor state": how messages name a tensor kind.
const char* TensorKindName(TensorKind kind);

}  // namespace openmoe
