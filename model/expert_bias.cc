#include "model/expert_bias.h"

#include "core/check.h"

namespace openmoe {

ExpertBias::ExpertBias(int64_t layers, int64_t num_experts, double rate)
    : layers_(layers), num_experts_(num_experts), rate_(rate), biases_(layers * num_experts, 0.0f) {
  OPENMOE_CHECK(layers >= 0 && num_experts > 0);
}

void ExpertBias::Update(const std::vector<RoutingStats>& routing) {
  OPENMOE_CHECK(static_cast<int64_t>(routing.size()) <= layers_);
  for (size_t layer = 0; layer < routing.size(); ++layer) {
    const std::vector<int64_t>& load = routing[layer].routed_per_expert;
    if (load.empty()) continue;  // a dense layer
    OPENMOE_CHECK(static_cast<int64_t>(load.size()) == num_experts_);
    int64_t total = 0;
    for (int64_t n : load) total += n;
    // Compared as load_e * E against the total, in integers: the sign does not round.
    float* bias = biases_.data() + layer * num_experts_;
    for (int64_t e = 0; e < num_experts_; ++e) {
      const int64_t scaled = load[e] * num_experts_;
      const double sign = scaled < total ? 1.0 : scaled > total ? -1.0 : 0.0;
      bias[e] = static_cast<float>(bias[e] + rate_ * sign);
    }
  }
}

}  // namespace openmoe
