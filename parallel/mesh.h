// The simulated TPU v3 mesh, its named axes, and its mapping onto MPI ranks.
//
// Chips are numbered 0..num_chips-1 and laid out row-major on the torus (chip c at
// (c % torus_x, c / torus_x)). Three named axes, `model` innermost (a model group is neighbouring
// chips, on one host where it fits, as Megatron places its tensor-parallel groups):
//   model  = c % model_parallel                        (tensor parallelism: parameter slices)
//   expert = (c / model_parallel) % expert_parallel    (carved out of the data axis)
//   data   = c / (model_parallel * expert_parallel)
// The chips of one model group hold the same rows (a data shard): shard s = c / model_parallel,
// num_shards = num_chips / model_parallel. Each holds slice `model` of every parameter the rule
// table (model/sharding.h) splits over the model axis, and the whole of the others. Over the
// shards, the expert axis is as without a model axis: shards [g*ep, (g+1)*ep) form expert group
// g, and shard s holds experts [(s % ep) * E/ep, (s % ep + 1) * E/ep) of every MoE layer.
//
// Rank r hosts chips [r * cpr, (r + 1) * cpr), cpr = num_chips / world_size, and holds each
// parameter its chips need once. cpr and model_parallel divide one another:
//   cpr >= model_parallel: the rank hosts whole model groups, so it holds whole parameters and
//     cpr / model_parallel shards; no model-axis communication;
//   cpr < model_parallel: a model group spans model_ranks = model_parallel / cpr ranks; this rank
//     holds piece model_index of model_ranks of every model-split parameter (the union of its
//     chips' slices) and one shard, shared with the other ranks of its group.
// ShardMesh() is the data x expert mesh of the shards over the ranks that hold the same model
// piece: what the data pipeline, the expert runner and expert placement work on.
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
  int64_t model_parallel = 1;    // size of the model axis
  int64_t num_experts = 0;       // 0: dense model
  int world_size = 1;
  int rank = 0;
  int64_t chips_per_rank = 1;
  int64_t first_local_expert = 0;  // this rank's experts: [first, first + num_local_experts)
  int64_t num_local_experts = 0;
  int64_t model_ranks = 1;  // ranks one model group spans (1: each rank holds whole groups)
  int64_t model_index = 0;  // this rank's piece of the model-split parameters, of model_ranks

  int64_t NumShards() const { return num_chips / model_parallel; }
  int64_t ShardOfChip(int64_t chip) const { return chip / model_parallel; }
  int64_t ModelCoordOfChip(int64_t chip) const { return chip % model_parallel; }
  int64_t ExpertCoordOfChip(int64_t chip) const {
    return chip / model_parallel % expert_parallel;
  }
  int64_t ShardsPerRank() const { return chips_per_rank >= model_parallel ? chips_per_rank / model_parallel : 1; }
  int64_t FirstShard() const { return ShardOfChip(FirstChip()); }

  int64_t ExpertsPerChip() const { return num_experts / expert_parallel; }
  int64_t FirstChip() const { return rank * chips_per_rank; }
  int RankOfChip(int64_t chip) const { return static_cast<int>(chip / chips_per_rank); }
  // The chip of `src_chip`'s expert group that holds `expert` (model_parallel 1; with a model axis
  // ask ShardMesh(), whose chips are the shards).
  int64_t ChipHoldingExpert(int64_t src_chip, int64_t expert) const {
    return src_chip / expert_parallel * expert_parallel + expert / ExpertsPerChip();
  }
  // First global expert held by `rank` (model_parallel 1, as ChipHoldingExpert).
  int64_t FirstExpertOfRank(int rank) const;
  std::pair<int64_t, int64_t> TorusCoords(int64_t chip) const {
    return {chip % torus_x, chip / torus_x};
  }

  // Communicator colors (Communicator::Split, key = world rank):
  // ranks holding the same model piece: the data x expert world of ShardMesh();
  int ModelPieceColor() const { return static_cast<int>(model_index); }
  // ranks of one model group (they hold the same shard's rows and its pieces);
  int ModelGroupColor() const { return static_cast<int>(rank / model_ranks); }
  // ranks holding the same experts and the same model piece (replicas of the expert weights).
  int ReplicaColor() const {
    return static_cast<int>(first_local_expert * model_ranks + model_index);
  }

  // The shards as a data x expert mesh (model_parallel 1) over the world of ModelPieceColor():
  // its chips are this mesh's shards, its ranks the ranks with this rank's model_index.
  Mesh ShardMesh() const;
};

// Builds the mesh of `spec` for this world. Fails, naming the fields, when the chips do not divide
// over the ranks or the axes, or when a rank's chips would hold a partial model or expert group
// that does not divide evenly (chips per rank must divide, or be divisible by, model_parallel;
// likewise shards per rank and expert_parallel).
absl::StatusOr<Mesh> MakeMesh(const JobSpec& spec, int world_size, int rank);

}  // namespace openmoe
