#include "parallel/mesh.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace openmoe {

int64_t Mesh::FirstExpertOfRank(int r) const {
  if (num_experts == 0) return 0;
  if (chips_per_rank >= expert_parallel) return 0;  // the rank holds whole expert groups
  return (r * chips_per_rank) % expert_parallel * ExpertsPerChip();
}

Mesh Mesh::ShardMesh() const {
  Mesh s = *this;
  s.num_chips = NumShards();
  s.model_parallel = 1;
  s.chips_per_rank = ShardsPerRank();
  s.world_size = static_cast<int>(world_size / model_ranks);
  s.rank = static_cast<int>(rank / model_ranks);
  s.model_ranks = 1;
  s.model_index = 0;
  return s;
}

absl::StatusOr<Mesh> MakeMesh(const JobSpec& spec, int world_size, int rank) {
  Mesh m;
  m.num_chips = spec.topology().num_chips();
  m.torus_x = spec.topology().torus_x();
  m.torus_y = spec.topology().torus_y();
  m.chips_per_host = spec.topology().chips_per_host();
  m.expert_parallel = spec.mesh().expert_parallel();
  m.model_parallel = spec.mesh().model_parallel();
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
  const int64_t mp = m.model_parallel;
  if (mp < 1 || m.num_chips % mp != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "mesh.model_parallel=%d must divide topology.num_chips=%d", mp, m.num_chips));
  }
  if (m.chips_per_rank % mp != 0 && mp % m.chips_per_rank != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d chips per rank (topology.num_chips=%d over %d ranks) and mesh.model_parallel=%d must "
        "divide one another",
        m.chips_per_rank, m.num_chips, world_size, mp));
  }
  if (m.chips_per_rank < mp) {
    m.model_ranks = mp / m.chips_per_rank;
    m.model_index = rank % m.model_ranks;
  }
  if (m.num_experts > 0) {
    const int64_t shards = m.NumShards(), per_rank = m.ShardsPerRank(), ep = m.expert_parallel;
    if (ep < 1 || m.num_experts % ep != 0 || shards % ep != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "mesh.expert_parallel=%d must divide model.num_experts=%d and the %d data shards "
          "(topology.num_chips=%d / mesh.model_parallel=%d)",
          ep, m.num_experts, shards, m.num_chips, mp));
    }
    if (per_rank % ep != 0 && ep % per_rank != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%d data shards per rank (topology.num_chips=%d / mesh.model_parallel=%d over %d ranks) "
          "and mesh.expert_parallel=%d must divide one another",
          per_rank, m.num_chips, mp, world_size, ep));
    }
    const Mesh shard_mesh = m.ShardMesh();
    m.num_local_experts = m.num_experts * std::min(per_rank, ep) / ep;
    m.first_local_expert = shard_mesh.FirstExpertOfRank(shard_mesh.rank);
  }
  return m;
}

}  // namespace openmoe
