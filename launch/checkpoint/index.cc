#include "launch/checkpoint/index.h"

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

std::vector<LocalTensor> LocalTensors(const ParamLayout& layout, const Optimizer* base_optimizer) {
  std::vector<LocalTensor> out;
  const int64_t total_experts = layout.dims().num_experts;
  for (const ParamInfo& p : layout.params()) {
    LocalTensor t;
    t.name = p.name;
    t.kind = TENSOR_PARAM;
    t.global_shape = p.shape;
    t.is_expert = p.is_expert;
    t.offset = p.offset;
    if (p.is_expert) {
      t.global_shape[0] = total_experts;
      t.first_expert = p.first_expert;
      t.num_experts = p.shape[0];
      t.per_expert = p.shape[0] > 0 ? p.size / p.shape[0] : 0;
    } else {
      t.per_expert = p.size;
    }
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
    const int64_t count = param.is_expert ? param.num_experts : 1;
    LocalTensor t;
    t.name = param.name;
    t.kind = TENSOR_ADAFACTOR;
    t.is_expert = param.is_expert;
    t.first_expert = param.first_expert;
    t.num_experts = param.num_experts;
    if (count == 0) {  // no local experts (cannot happen on a valid mesh, but keep it exact)
      t.global_shape = param.global_shape;
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
      t.global_shape.back() = first.rows + first.cols;
    } else {
      t.global_shape = param.global_shape;
    }
    out.push_back(std::move(t));
  }
  OPENMOE_CHECK(s == slices.size());
  return out;
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
