#include "model/sharding.h"

#include <algorithm>

#include "core/check.h"

namespace openmoe {

MeshAxis MeshAxisOf(LogicalAxis axis) {
  for (const PartitionRule& r : kPartitionRules)
    if (r.logical == axis) return r.mesh;
  return MeshAxis::kReplicated;
}

const char* LogicalAxisName(LogicalAxis axis) {
  switch (axis) {
    case LogicalAxis::kVocab: return "vocab";
    case LogicalAxis::kEmbed: return "embed";
    case LogicalAxis::kHeads: return "heads";
    case LogicalAxis::kHeadDim: return "head_dim";
    case LogicalAxis::kMlp: return "mlp";
    case LogicalAxis::kGatePair: return "gate_pair";
    case LogicalAxis::kExpert: return "expert";
    case LogicalAxis::kRouted: return "routed";
  }
  return "?";
}

int64_t ViewBox::NumElements() const {
  int64_t n = 1;
  for (int64_t s : size) n *= s;
  return n;
}

void ForEachRun(const ViewBox& box,
                const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  const int rank = static_cast<int>(box.view.size());
  OPENMOE_CHECK(box.begin.size() == box.view.size() && box.size.size() == box.view.size());
  if (box.NumElements() == 0) return;
  // The innermost dims the box spans whole merge into one run with the first partial dim.
  int64_t run = 1;
  int d = rank - 1;
  while (d >= 0 && box.size[d] == box.view[d]) run *= box.view[d--];
  if (d >= 0) run *= box.size[d];
  const int outer = d;  // dims [0, outer) are iterated; dim `outer` contributes its begin
  std::vector<int64_t> stride(rank, 1);
  for (int i = rank - 2; i >= 0; --i) stride[i] = stride[i + 1] * box.view[i + 1];
  std::vector<int64_t> idx(std::max(outer, 0), 0);
  int64_t box_offset = 0;
  while (true) {
    int64_t whole = outer >= 0 ? box.begin[outer] * stride[outer] : 0;
    for (int i = 0; i < outer; ++i) whole += (box.begin[i] + idx[i]) * stride[i];
    fn(box_offset, whole, run);
    box_offset += run;
    int i = outer - 1;
    for (; i >= 0; --i) {
      if (++idx[i] < box.size[i]) break;
      idx[i] = 0;
    }
    if (i < 0) break;
  }
}

void CopyBoxToWhole(const ViewBox& box, const float* box_data, float* whole) {
  ForEachRun(box, [&](int64_t b, int64_t w, int64_t n) { std::copy_n(box_data + b, n, whole + w); });
}

void CopyWholeToBox(const ViewBox& box, const float* whole, float* box_data) {
  ForEachRun(box, [&](int64_t b, int64_t w, int64_t n) { std::copy_n(whole + w, n, box_data + b); });
}

}  // namespace openmoe
