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
// The model axis: a layout holding model piece i of p (ParamLayout::model_parts() > 1) holds a box
// of each model-split tensor (model_piece). A file always holds the tensor whole over the model
// axis (global names and shapes whatever the split: `whole_per_expert` floats per expert), and
// the boxes say where the piece's elements sit in it: parameters, AdamW m / v and unfactored
// Adafactor state the parameter's box; factored Adafactor state per expert v_row then v_col, each
// a box of the whole v_row (rows) / v_col (the columns' view: an OpenMoE wi_0 piece's v_col is
// [its a columns | its b columns] of (2, F)), whole when its dim is not split.
//
// Pure functions of the layout and optimizer; not collective.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/optimizer.h"
#include "model/params.h"
#include "model/sharding.h"
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

  // Set when this rank holds a model piece of the tensor (less than the whole of each expert).
  bool model_piece = false;
  int64_t whole_per_expert = 0;  // model pieces: floats per expert of the whole tensor
  // Model pieces: the boxes of the piece in the whole (per expert; an expert tensor's box has its
  // experts dim relative to first_expert). Parameters, AdamW m / v, unfactored Adafactor state:
  // `box`, the parameter's. Factored Adafactor state: row_box of v_row, col_box of v_col.
  ViewBox box, row_box, col_box;
  // Floats per expert in the file: the whole tensor's.
  int64_t file_per_expert() const { return model_piece ? whole_per_expert : per_expert; }
  int64_t file_size() const { return num_experts * file_per_expert(); }
};

// Calls fn(piece_offset, whole_offset, count) for each contiguous run of t's piece: element
// piece_offset + i of the piece (t.size() floats, this rank's buffer) is element whole_offset + i
// of the whole (t.file_size() floats, what the file holds). Not for a tensor that is not a model
// piece (there the two are the same).
void ForEachPieceRun(
    const LocalTensor& t,
    const std::function<void(int64_t piece_offset, int64_t whole_offset, int64_t count)>& fn);
// The same tensor as model piece `index` holds it (the pieces of one tensor differ only in where
// their boxes begin along the split dim).
LocalTensor PieceOf(const LocalTensor& t, int64_t index);
// Copies a piece (t.size() floats) into / out of the whole (t.file_size() floats).
void CopyPieceToWhole(const LocalTensor& t, const float* piece, float* whole);
void CopyWholeToPiece(const LocalTensor& t, const float* whole, float* piece);

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
