// Footprints of expert groups and expert replica sets on a bare torus, for the cost-model tests.
#pragma once

#include <cstdint>

#include "parallel/mesh.h"
#include "parallel/cost/torus_footprint.h"

namespace openmoe::testing {

// An x-by-y slice with expert groups of `ep` chips (512 experts: enough for any group size here).
inline Mesh SliceMesh(int64_t x, int64_t y, int64_t ep) {
  Mesh m;
  m.num_chips = x * y;
  m.torus_x = x;
  m.torus_y = y;
  m.expert_parallel = ep;
  m.num_experts = 512;
  return m;
}

// Where expert group 0 sits.
inline Footprint Group(int64_t x, int64_t y, int64_t ep, bool wraparound = true) {
  const Mesh m = SliceMesh(x, y, ep);
  return FootprintOf(TorusOf(m, wraparound), ExpertGroupChips(m, 0));
}

// Where the replicas of the experts in group slot `slot` sit.
inline Footprint Replicas(int64_t x, int64_t y, int64_t ep, int64_t slot = 0) {
  const Mesh m = SliceMesh(x, y, ep);
  return FootprintOf(TorusOf(m, true), ExpertReplicaChips(m, slot));
}

}  // namespace openmoe::testing
