#include "parallel/mesh.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace openmoe {

int64_t Mesh::FirstExpertOfRank(int r) const {
  if (num_experts == 0) return 0;
  if (chips_per_rank >= expert_parallel) return 0;  // the rank holds whole expert groups
  return (r * chips_per_rank) % expert_parallel * ExpertsPerChip();
}

absl::StatusOr<Mesh> MakeMesh(const JobSpec& spec, int world_size, int rank) {
  Mesh m;
  m.num_chips = spec.topology().num_chips();
  m.torus_x = spec.topology().torus_x();
  m.torus_y = spec.topology().torus_y();
  m.chips_per_host = spec.topology().chips_per_host();
  m.expert_parallel = spec.mesh().expert_parallel();
  m.num_experts = spec.model().num_experts();
  m.world_size = world_size;
  m.rank = rank;
  if (world_size < 1 || m.num_chips % world_size != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "topology.num_chips=%d does not divide over %d MPI ranks; start a number of ranks that "
        "divides the chip count",
        m.num_chips, world_size));
  }
  m.chips_per_rank = m.num_chips / world_size;
  if (m.num_experts > 0) {
    if (m.expert_parallel < 1 || m.num_experts % m.expert_parallel != 0 ||
        m.num_chips % m.expert_parallel != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "mesh.expert_parallel=%d must divide model.num_experts=%d and topology.num_chips=%d",
          m.expert_parallel, m.num_experts, m.num_chips));
    }
    if (m.chips_per_rank % m.expert_parallel != 0 && m.expert_parallel % m.chips_per_rank != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%d chips per rank (topology.num_chips=%d over %d ranks) and mesh.expert_parallel=%d must "
          "divide one another",
          m.chips_per_rank, m.num_chips, world_size, m.expert_parallel));
    }
    m.num_local_experts =
        m.num_experts * std::min(m.chips_per_rank, m.expert_parallel) / m.expert_parallel;
    m.first_local_expert = m.FirstExpertOfRank(rank);
  }
  return m;
}

}  // namespace openmoe
