// The simulated TPU v3 mesh and its mapping onto MPI ranks.
//
// Chips are numbered 0..num_chips-1 and laid out row-major on the torus (chip c at
// (c % torus_x, c / torus_x)). Mesh axes: `data` spans every chip (each holds a data shard);
// `expert` is carved out of it: chips [g*ep, (g+1)*ep) form expert group g, and chip c of a group
// holds experts [(c % ep) * E/ep, (c % ep + 1) * E/ep) of every MoE layer; the groups replicate
// the experts. Rank r hosts chips [r * cpr, (r + 1) * cpr), cpr = num_chips / world_size, and
// holds each parameter its chips need once: all non-expert parameters and the union of its
// chips' experts, a contiguous range of global expert ids.
#pragma once

#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"
#include "proto/job.pb.h"

namespace openmoe {

struct Mesh {
  int64_t num_chips = 1;
  int64_t torus_x = 1, torus_y = 1;
  int64_t chips_per_host = 4;
  int64_t expert_parallel = 1;   // size of the expert axis
  int64_t num_experts = 0;       // 0: dense model
  int world_size = 1;
  int rank = 0;
  int64_t chips_per_rank = 1;
  int64_t first_local_expert = 0;  // this rank's experts: [first, first + num_local_experts)
  int64_t num_local_experts = 0;

  int64_t ExpertsPerChip() const { return num_experts / expert_parallel; }
  int64_t FirstChip() const { return rank * chips_per_rank; }
  int RankOfChip(int64_t chip) const { return static_cast<int>(chip / chips_per_rank); }
  // The chip of `src_chip`'s expert group that holds `expert`.
  int64_t ChipHoldingExpert(int64_t src_chip, int64_t expert) const {
    return src_chip / expert_parallel * expert_parallel + expert / ExpertsPerChip();
  }
  // First global expert held by `rank`.
  int64_t FirstExpertOfRank(int rank) const;
  std::pair<int64_t, int64_t> TorusCoords(int64_t chip) const {
    return {chip % torus_x, chip / torus_x};
  }
  // Ranks holding the same experts share this color (one replica set per expert range).
  int ReplicaColor() const { return static_cast<int>(first_local_expert); }
};

// Builds the mesh of `spec` for this world. Fails, naming the fields, when the chips do not divide
// over the ranks, or when a rank's chips would hold a partial expert group that does not divide
// evenly (chips_per_rank and expert_parallel must divide one another).
absl::StatusOr<Mesh> MakeMesh(const JobSpec& spec, int world_size, int rank);

}  // namespace openmoe
