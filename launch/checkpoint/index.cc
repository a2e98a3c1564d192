#include "launch/checkpoint/index.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "model/adafactor.h"

namespace openmoe {

namespace {

// AdamW's m (at offset 0) or v (at offset total_size) of each parameter: the parameter's shape.
void AppendAdamWState(const ParamLayout& layout, TensorKind kind, std::vector<LocalTensor>* out) {
  const size_t num_params = layout.params().size();
  const int64_t base = kind == TENSOR_ADAMW_M ? 0 : layout.total_size();
  for (size_t i = 0; i < num_params; ++i) {
    LocalTensor t = (*out)[i];
    t.kind = kind;
    t.offset = base + t.offset;
    out->push_back(std::move(t));
  }
}

}  // namespace

namespace {

// p's box with the expert dim relative to the layout's experts (what a file of them holds).
ViewBox RelativeBox(const ParamInfo& p) {
  ViewBox b = p.box;
  if (p.is_expert) {
    b.view[0] = b.size[0];
    b.begin[0] = 0;
  }
  return b;
}

// The box of the view dims that make up global dim `dim` of p (view dims refine the global dims
// in order, model/sharding.h).
ViewBox BoxOfGlobalDim(const ParamInfo& p, size_t dim) {
  ViewBox out;
  size_t v = 0;
  for (size_t g = 0; g < p.global_shape.size(); ++g) {
    int64_t whole = 1;
    const size_t first = v;
    do {
      whole *= p.box.view[v++];
    } while (whole < p.global_shape[g] && v < p.box.view.size());
    OPENMOE_CHECK(whole == p.global_shape[g]);
    if (g != dim) continue;
    for (size_t i = first; i < v; ++i) {
      out.view.push_back(p.box.view[i]);
      out.begin.push_back(p.box.begin[i]);
      out.size.push_back(p.box.size[i]);
    }
  }
  OPENMOE_CHECK(!out.view.empty());
  return out;
}

int64_t Product(const std::vector<int64_t>& v) {
  int64_t n = 1;
  for (int64_t x : v) n *= x;
  return n;
}

}  // namespace

std::vector<LocalTensor> LocalTensors(const ParamLayout& layout, const Optimizer* base_optimizer) {
  std::vector<LocalTensor> out;
  const bool pieces = layout.model_parts() > 1;
  for (const ParamInfo& p : layout.params()) {
    LocalTensor t;
    t.name = p.name;
    t.kind = TENSOR_PARAM;
    t.global_shape = p.global_shape;
    t.is_expert = p.is_expert;
    t.offset = p.offset;
    t.box = RelativeBox(p);
    if (p.is_expert) {
      t.first_expert = p.first_expert;
      t.num_experts = p.shape[0];
      t.per_expert = p.shape[0] > 0 ? p.size / p.shape[0] : 0;
    } else {
      t.per_expert = p.size;
    }
    t.model_piece = pieces && p.model_split();
    t.whole_per_expert = Product(p.global_shape) / (p.is_expert ? p.global_shape[0] : 1);
    out.push_back(std::move(t));
  }
  if (base_optimizer == nullptr) return out;
  if (base_optimizer->kind() == OPTIMIZER_ADAMW) {
    AppendAdamWState(layout, TENSOR_ADAMW_M, &out);
    AppendAdamWState(layout, TENSOR_ADAMW_V, &out);
    return out;
  }
  const Adafactor* optimizer = dynamic_cast<const Adafactor*>(base_optimizer);
  OPENMOE_CHECK(optimizer != nullptr);

  const std::vector<Adafactor::Slice>& slices = optimizer->slices();
  size_t s = 0;
  const size_t num_params = out.size();
  for (size_t i = 0; i < num_params; ++i) {
    const LocalTensor& param = out[i];
    const ParamInfo& info = layout.params()[i];
    const int64_t count = param.is_expert ? param.num_experts : 1;
    LocalTensor t;
    t.name = param.name;
    t.kind = TENSOR_ADAFACTOR;
    t.is_expert = param.is_expert;
    t.first_expert = param.first_expert;
    t.num_experts = param.num_experts;
    t.model_piece = param.model_piece;
    t.box = param.box;
    if (count == 0) {  // no local experts (cannot happen on a valid mesh, but keep it exact)
      t.global_shape = param.global_shape;
      t.whole_per_expert = param.whole_per_expert;
      out.push_back(std::move(t));
      continue;
    }
    OPENMOE_CHECK(s + count <= slices.size());
    const Adafactor::Slice& first = slices[s];
    t.factored = first.factored;
    t.offset = first.state_offset;
    t.per_expert = first.factored ? first.rows + first.cols : first.rows * first.cols;
    for (int64_t e = 0; e < count; ++e) {
      const Adafactor::Slice& slice = slices[s + e];
      OPENMOE_CHECK(slice.state_offset == t.offset + e * t.per_expert);
      OPENMOE_CHECK(slice.factored == t.factored);
    }
    s += count;
    if (t.factored) {
      t.global_shape = param.global_shape;
      t.global_shape.resize(param.global_shape.size() - 1);
      t.global_shape.back() = first.global_rows + first.global_cols;
      t.whole_per_expert = first.global_rows + first.global_cols;
      // A factored tensor is a matrix (per expert): its last two global dims are rows, cols.
      const size_t dims = info.global_shape.size();
      t.row_box = BoxOfGlobalDim(info, dims - 2);
      t.col_box = BoxOfGlobalDim(info, dims - 1);
      OPENMOE_CHECK(t.row_box.NumElements() == first.rows && t.col_box.NumElements() == first.cols);
    } else {
      t.global_shape = param.global_shape;
      t.whole_per_expert = param.whole_per_expert;
    }
    out.push_back(std::move(t));
  }
  OPENMOE_CHECK(s == slices.size());
  return out;
}

void ForEachPieceRun(const LocalTensor& t,
                     const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  OPENMOE_CHECK(t.model_piece);
  if (!(t.kind == TENSOR_ADAFACTOR && t.factored)) {
    ForEachRun(t.box, fn);
    return;
  }
  const int64_t r = t.row_box.NumElements(), c = t.col_box.NumElements();
  const int64_t rows = Product(t.row_box.view), cols = Product(t.col_box.view);
  for (int64_t e = 0; e < t.num_experts; ++e) {
    const int64_t piece = e * (r + c), whole = e * (rows + cols);
    ForEachRun(t.row_box, [&](int64_t b, int64_t w, int64_t n) { fn(piece + b, whole + w, n); });
    ForEachRun(t.col_box,
               [&](int64_t b, int64_t w, int64_t n) { fn(piece + r + b, whole + rows + w, n); });
  }
}

LocalTensor PieceOf(const LocalTensor& t, int64_t index) {
  LocalTensor out = t;
  // The split dim is the one a box holds part of (the experts dim of `box` is relative: whole).
  for (ViewBox* b : {&out.box, &out.row_box, &out.col_box}) {
    for (size_t d = 0; d < b->view.size(); ++d)
      if (b->size[d] != b->view[d]) b->begin[d] = index * b->size[d];
  }
  return out;
}

void CopyPieceToWhole(const LocalTensor& t, const float* piece, float* whole) {
  ForEachPieceRun(t,
                  [&](int64_t b, int64_t w, int64_t n) { std::copy_n(piece + b, n, whole + w); });
}

void CopyWholeToPiece(const LocalTensor& t, const float* whole, float* piece) {
  ForEachPieceRun(t,
                  [&](int64_t b, int64_t w, int64_t n) { std::copy_n(whole + w, n, piece + b); });
}

std::string TensorFileName(const LocalTensor& t) {
  std::string name = absl::StrCat(TensorFilePrefix(t.kind), ".", t.name);
  if (t.is_expert)
    absl::StrAppend(&name, ".experts_", t.first_expert, "-", t.first_expert + t.num_experts - 1);
  return name + ".zst";
}

const char* TensorFilePrefix(TensorKind kind) {
  switch (kind) {
    case TENSOR_PARAM:
      return "param";
    case TENSOR_ADAFACTOR:
      return "adafactor";
    case TENSOR_ADAMW_M:
      return "adamw_m";
    case TENSOR_ADAMW_V:
      return "adamw_v";
  }
  return "unknown";
}

const char* TensorKindName(TensorKind kind) {
  switch (kind) {
    case TENSOR_PARAM:
      return "param";
    case TENSOR_ADAFACTOR:
      return "adafactor state";
    case TENSOR_ADAMW_M:
      return "adamw m";
    case TENSOR_ADAMW_V:
      return "adamw v";
  }
  return "unknown tensor";
}

OptimizerKind OptimizerOfTensor(TensorKind kind) {
  return kind == TENSOR_ADAFACTOR ? OPTIMIZER_ADAFACTOR : OPTIMIZER_ADAMW;
}

}  // namespace openmoe
