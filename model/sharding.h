// Sharding as data: each parameter's logical axes, and the rule table that maps logical axes to
// mesh axes (as T5X's partitioning rules do).
//
// A parameter's global tensor is described by a view: its shape refined so that every logical
// axis is a dim of its own (wi_0 of the OpenMoE FFN, (d, 2F), is viewed as (embed, gate_pair,
// mlp) = (d, 2, F), so a model slice keeps each a column with its silu(b) partner; wq, (d, H*Dh),
// as (embed, heads, head_dim)). Global dims are products of consecutive view dims, so a view box
// is also a set of runs of the row-major global tensor.
//
// The rule table (kPartitionRules): vocab, heads and mlp go to the model axis, expert to the
// expert axis, everything else (embed, head_dim, gate_pair) is replicated. A parameter has at most
// one dim on the model axis (the first whose rule says so); the router and the norm scales have
// none and are replicated over it. A rank holds, of each parameter, the box of its view given by
// its experts (expert dim) and its model piece (model dim, piece `index` of `parts` equal ones).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace openmoe {

enum class LogicalAxis { kVocab, kEmbed, kHeads, kHeadDim, kMlp, kGatePair, kExpert, kRouted };
enum class MeshAxis { kReplicated, kExpert, kModel };

struct PartitionRule {
  LogicalAxis logical;
  MeshAxis mesh;
};
inline constexpr PartitionRule kPartitionRules[] = {
    {LogicalAxis::kVocab, MeshAxis::kModel},       {LogicalAxis::kHeads, MeshAxis::kModel},
    {LogicalAxis::kMlp, MeshAxis::kModel},         {LogicalAxis::kExpert, MeshAxis::kExpert},
    {LogicalAxis::kEmbed, MeshAxis::kReplicated},  {LogicalAxis::kHeadDim, MeshAxis::kReplicated},
    {LogicalAxis::kGatePair, MeshAxis::kReplicated},
    {LogicalAxis::kRouted, MeshAxis::kReplicated},  // the router's expert scores: every chip
};
MeshAxis MeshAxisOf(LogicalAxis axis);
const char* LogicalAxisName(LogicalAxis axis);

// Which piece of the parameters a layout holds.
struct ParamShard {
  int64_t first_expert = 0;
  int64_t num_local_experts = -1;  // -1: all experts
  int64_t model_parts = 1;         // pieces the model axis splits model-split parameters into
  int64_t model_index = 0;         // this layout's piece, in [0, model_parts)
};

// A box of a row-major view: per view dim, [begin, begin + size) of view[dim].
struct ViewBox {
  std::vector<int64_t> view;
  std::vector<int64_t> begin;
  std::vector<int64_t> size;
  int64_t NumElements() const;
};

// Calls fn(box_offset, whole_offset, count) for each contiguous run of the box, in the box's
// row-major order: element box_offset + i of the box (row-major over `size`) is element
// whole_offset + i of the whole view.
void ForEachRun(const ViewBox& box,
                const std::function<void(int64_t box_offset, int64_t whole_offset, int64_t count)>& fn);

// Copies between a box's elements (row-major over box.size) and the whole view's tensor.
void CopyBoxToWhole(const ViewBox& box, const float* box_data, float* whole);
void CopyWholeToBox(const ViewBox& box, const float* whole, float* box_data);

}  // namespace openmoe
