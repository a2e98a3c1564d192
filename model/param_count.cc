#include "model/param_count.h"

#include "core/check.h"

namespace openmoe {
namespace {

bool IsMatmul(Component c) { return c != Component::kEmbedding && c != Component::kNorm; }

// Adafactor statistics of one (rows, cols) matrix, or of a vector (is_matrix false, rows = 1).
int64_t AdafactorStateSize(bool is_matrix, int64_t rows, int64_t cols,
                           const AdafactorConfig& config) {
  const int64_t min_dim = config.min_dim_size_to_factor();
  const bool factored = config.factored() && is_matrix && rows >= min_dim && cols >= min_dim;
  return factored ? rows + cols : rows * cols;
}

}  // namespace

ParamCounts CountParams(const ParamLayout& layout) {
  const ModelDims& dims = layout.dims();
  ParamCounts counts;
  for (const ParamInfo& p : layout.params()) {
    const int index = static_cast<int>(p.component);
    OPENMOE_CHECK_MSG(index >= 0 && index < kNumComponents, "%s: component %d not counted",
                      p.name.c_str(), index);
    int64_t activated = p.size;
    if (p.is_expert) {
      const int64_t num_experts = p.shape[0];
      OPENMOE_CHECK(num_experts == dims.num_experts && p.size % num_experts == 0);
      activated = p.size / num_experts * dims.top_k;
      counts.expert_total += p.size;
    }
    counts.by_component[index].total += p.size;
    counts.by_component[index].activated += activated;
    counts.total += p.size;
    counts.activated += activated;
    if (p.component != Component::kEmbedding) {
      counts.non_embedding_total += p.size;
      counts.non_embedding_activated += activated;
    }
    if (IsMatmul(p.component)) counts.activated_matmul += activated;
  }
  return counts;
}

TrainingFlops TrainingFlopsPerToken(const ParamLayout& layout, int64_t seq_len) {
  const ModelDims& dims = layout.dims();
  TrainingFlops flops;
  // The whole model's count: a rank's layout holds only its experts (ParamShard), and a token's
  // FLOPs do not depend on where its experts live.
  const ParamLayout whole(dims);
  flops.matmul = 6.0 * static_cast<double>(CountParams(whole).activated_matmul);
  flops.attention = 12.0 * static_cast<double>(dims.num_layers) * dims.num_heads * dims.head_dim *
                    static_cast<double>(seq_len);
  flops.total = flops.matmul + flops.attention;
  return flops;
}

ChipMemory MemoryPerChip(const ParamLayout& layout, const AdafactorConfig& optimizer,
                         int64_t expert_parallel) {
  OPENMOE_CHECK(expert_parallel >= 1);
  ChipMemory mem;
  for (const ParamInfo& p : layout.params()) {
    const int64_t cols = p.shape.back();
    if (p.is_expert) {
      // (E, rows, cols): E / expert_parallel experts per chip, each its own matrix.
      OPENMOE_CHECK(p.shape.size() == 3 && p.shape[0] % expert_parallel == 0);
      const int64_t local_experts = p.shape[0] / expert_parallel;
      const int64_t rows = p.shape[1];
      mem.params += local_experts * rows * cols;
      mem.optimizer_state += local_experts * AdafactorStateSize(true, rows, cols, optimizer);
    } else {
      OPENMOE_CHECK(p.shape.size() == 1 || p.shape.size() == 2);
      const int64_t rows = p.shape.size() == 2 ? p.shape[0] : 1;
      mem.params += p.size;
      mem.optimizer_state += AdafactorStateSize(p.shape.size() == 2, rows, cols, optimizer);
    }
  }
  constexpr int64_t kFloatBytes = 4;
  mem.params_bytes = mem.params * kFloatBytes;
  mem.grads_bytes = mem.params * kFloatBytes;
  mem.optimizer_bytes = mem.optimizer_state * kFloatBytes;
  mem.total_bytes = mem.params_bytes + mem.grads_bytes + mem.optimizer_bytes;
  return mem;
}

ChipMemory MemoryPerChip(const ParamLayout& layout, const JobSpec& spec, int64_t expert_parallel) {
  ChipMemory mem = MemoryPerChip(layout, spec.optimizer(), expert_parallel);
  if (spec.train().optimizer() == OPTIMIZER_ADAMW) {
    mem.optimizer_state = 2 * mem.params;  // m and v, elementwise
    mem.optimizer_bytes = mem.optimizer_state * 4;
    mem.total_bytes = mem.params_bytes + mem.grads_bytes + mem.optimizer_bytes;
  }
  return mem;
}

}  // namespace openmoe
