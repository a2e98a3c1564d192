// Auxiliary-loss-free load balancing (DeepSeek-V3, arXiv 2412.19437; router.bias_update_rate):
// one bias per expert of each MoE layer, added to the router's scores when experts are chosen
// (model/router.h), never to the combine weights. After every step each bias moves by
// rate * sign(mean load - load_e), where load_e is the number of the step's tokens that chose
// expert e (before capacity drops) over the whole mesh: the trainer passes the step's routing
// statistics reduced over every rank, so every rank holds the same biases.
//
// The biases are trainer state outside the model: saved in checkpoints (Trainer extras), written
// to the metrics, and loaded with the model by eval, score and analyze.
#pragma once

#include <cstdint>
#include <vector>

#include "model/router.h"

namespace openmoe {

// The biases' name in checkpoints (a Trainer extra, (layers, E)).
inline constexpr char kExpertBiasCheckpointName[] = "extra.router.expert_bias";

class ExpertBias {
 public:
  // layers: the model's number of layers (rows are kept for every layer, MoE or not, so a layer
  // index is a row index); all biases start at 0.
  ExpertBias(int64_t layers, int64_t num_experts, double rate);

  // Layer `layer`'s biases (E).
  const float* Row(int64_t layer) const { return biases_.data() + layer * num_experts_; }

  // One step's update from routing (one entry per layer; empty for dense layers).
  void Update(const std::vector<RoutingStats>& routing);

  int64_t layers() const { return layers_; }
  int64_t num_experts() const { return num_experts_; }
  // The (layers, E) biases, row-major: what checkpoints save and restore.
  float* data() { return biases_.data(); }
  const std::vector<float>& biases() const { return biases_; }

 private:
  int64_t layers_, num_experts_;
  double rate_;
  std::vector<float> biases_;
};

}  // namespace openmoe
