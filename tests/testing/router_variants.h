// The routers after OpenMoE's (model/router.h) as variants of LayoutJob, for the layout checks:
// each must give the one-chip, one-process losses on every layout.
#pragma once

#include <string>
#include <vector>

#include "tests/testing/layout_check.h"

namespace openmoe::testing {

struct RouterVariant {
  std::string name;
  JobSpec spec;
  // GLOBAL_BATCH balances each microbatch's batch: microbatches change its loss.
  bool microbatch_invariant = true;
  // Steps whose losses can be compared. Experts choosing compare scores across tokens, so the
  // fp32 rounding of gradients summed over other chip counts flips a near-tie once the
  // parameters have moved (seen at the third step of this job on every multi-chip layout, all
  // agreeing with each other): two steps, the gradients of the first included.
  int steps = 3;
};

inline std::vector<RouterVariant> RouterVariants() {
  std::vector<RouterVariant> out;
  auto add = [&](std::string name, auto&& edit) {
    JobSpec spec = LayoutJob(8);
    edit(spec.mutable_router());
    out.push_back({std::move(name), spec});
  };
  add("experts_choose", [](RouterConfig* r) {
    r->set_selection(EXPERTS_CHOOSE);
    r->set_capacity_factor(2.0);
  });
  out.back().steps = 2;
  add("sigmoid_normalized", [](RouterConfig* r) {
    r->set_score_function(SIGMOID);
    r->set_normalize_top_k(true);
  });
  // Bias balancing alone (no load-balance loss): the biases move by the mesh-wide loads.
  add("bias_balancing", [](RouterConfig* r) {
    r->set_score_function(SIGMOID);
    r->set_bias_update_rate(0.05);
    r->set_aux_loss_weight(0);
  });
  add("sequence_balance", [](RouterConfig* r) {
    r->set_load_balance_scope(SEQUENCE);
    r->set_aux_loss_weight(0.1);
  });
  add("global_balance", [](RouterConfig* r) {
    r->set_load_balance_scope(GLOBAL_BATCH);
    r->set_aux_loss_weight(0.1);
  });
  out.back().microbatch_invariant = false;
  add("group_limited", [](RouterConfig* r) {
    r->set_num_expert_groups(4);
    r->set_groups_per_token(1);
  });
  return out;
}

}  // namespace openmoe::testing
