// Trainer: one rank's share of the model, its gradients and optimizer state, and one training step
// on the simulated chip mesh.
//
// Every rank calls every method (they are collective over the world communicator). A step:
//   1. each rank takes the rows of its data shards (shard s, the chips of one model group, holds
//      global rows [s * rps, (s + 1) * rps) of the global batch, rps = batch_rows / num_shards;
//      without a model axis a shard is a chip). The ranks of one model group (mesh.model_ranks > 1)
//      take the same rows and hold different pieces of the model-split parameters;
//   2. microbatch m takes every local shard's m-th slice of rows, shard-major, so routing groups
//      stay inside one shard; forward and backward accumulate exact gradients (every loss term is
//      normalised by global counts, see LossScales); the decoder's tensor-parallel all-reduces run
//      over model_group();
//   3. gradients are summed over the ranks holding the same piece (pieces()); each expert's over
//      the ranks holding it and the same piece (replicas()), by a GradReducer that starts each
//      bucket as the last microbatch's backward finishes it (train.overlap_grad_reduce) and on a
//      progress thread; loss sums and routing statistics over pieces() (each shard counted once);
//   4. the optimizer (Adafactor or AdamW) updates, identically on every replica.
// The same job gives the same losses on any number of ranks and any layout (to float rounding).
//
// Routing options (README "Routing options"): from step router.freeze_after_steps on (steps
// counted from 0, so that many updates are taken), the router weights and their optimizer state
// are left unchanged (FrozenParams; their gradient is zeroed before the global norm). With
// router.token_id_routing_after_steps = S, every step before S counts the router's decisions per
// token id (TokenIdTables, summed over ranks when needed); at step S the tables are built, the
// same on every rank, and every later step routes by token id (no router, no router losses, the
// router frozen too). The counts are checkpoint state outside the model (CheckpointExtras).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/batch.h"
#include "core/phase_timer.h"
#include "core/tensor.h"
#include "data/batch_source.h"
#include "launch/frozen_params.h"
#include "launch/phase_report.h"
#include "model/optimizer.h"
#include "model/decoder.h"
#include "model/expert_bias.h"
#include "model/params.h"
#include "model/token_id_routing.h"
#include "parallel/comm_thread.h"
#include "parallel/communicator.h"
#include "parallel/grad_reducer.h"
#include "parallel/expert_parallel.h"
#include "parallel/mesh.h"
#include "proto/job.pb.h"

namespace openmoe {

struct StepResult {
  int64_t step = 0;          // the step just taken (from 0)
  DecoderSums sums;          // summed over microbatches and ranks
  double loss = 0;           // the full objective
  double learning_rate = 0;
  double grad_norm = 0;      // global L2 norm of the gradient before the update
  int64_t tokens = 0;        // tokens in the global batch
  double seconds = 0;        // wall time of the step
  // The loss or the gradient norm was not finite: the update was not applied (the batch was used
  // and the step counted). skipped_steps counts such steps since the trainer was created.
  bool skipped = false;
  int64_t skipped_steps = 0;
  // Data pipeline counters summed over every chip (documents, bad records skipped, ...).
  std::vector<std::pair<std::string, int64_t>> data_counters;
  // Measured time of the step's phases, reduced over ranks (launch/phase_report.h).
  PhaseTimes timing;
  // The expert exchange's rows and bytes since the trainer started, summed over every rank
  // (parallel/expert_parallel.h; zero without experts or when every expert is local).
  ExchangeCounters exchange;
  // router.bias_update_rate > 0: every layer's selection biases after this step's update,
  // (layers, E) row-major (model/expert_bias.h); empty otherwise.
  std::vector<float> expert_bias;
};

// Trainer state a checkpoint keeps besides parameters and optimizer state: a shared fp32 tensor,
// the same on every rank, saved as a parameter-kind tensor whose name starts with
// kCheckpointExtraPrefix (readers that load a model skip such names).
inline constexpr char kCheckpointExtraPrefix[] = "extra.";
struct CheckpointExtra {
  std::string name;
  std::vector<int64_t> shape;
  float* data = nullptr;  // the trainer's buffer, prod(shape) floats
};

// Sums `sums` over every rank of `comm` (loss sums, router losses, routing statistics), in two
// reductions (doubles and exact integer counts). Collective over comm.
void ReduceDecoderSums(Communicator& comm, DecoderSums* sums);

class Trainer {
 public:
  // comm: the world (null: this process alone). Fails if the mesh does not fit the world.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const JobSpec& spec,
                                                         Communicator* comm = nullptr);

  // Reads the next global batch (this rank's rows of it) and takes one optimizer step. A data
  // error on any rank fails the step on every rank (before any compute). A step whose loss or
  // global gradient norm is not finite is skipped (no update); more than train.max_skipped_steps
  // of them, or parameters that an update made non-finite, fail it on every rank.
  absl::StatusOr<StepResult> TryStep();
  // TryStep, aborting on a data error: for tests and benchmarks whose data is generated.
  StepResult Step();

  // Loss and gradients (into grads(), overwritten, reduced over ranks) of this rank's rows
  // `local_batch` of a global batch, at the current parameters. No update.
  DecoderSums ComputeGradients(const Batch& local_batch);

  // This rank's rows of the next global batch: each local chip's rows, chip-major (advances the
  // chips' data iterators). Not collective.
  absl::StatusOr<Batch> NextLocalBatch();

  const JobSpec& spec() const { return spec_; }
  const Mesh& mesh() const { return mesh_; }
  // The data x expert mesh of the data shards over pieces() (Mesh::ShardMesh).
  const Mesh& shard_mesh() const { return shard_mesh_; }
  const ParamLayout& layout() const { return layout_; }
  Tensor& params() { return params_; }
  Tensor& grads() { return grads_; }
  int64_t step() const { return step_; }
  // The last step was skipped (non-finite loss or gradient): the parameters are suspect.
  bool last_step_skipped() const { return last_step_skipped_; }
  const ExpertParallelRunner* runner() const { return runner_.get(); }
  const GradReducer& grad_reducer() const { return *reducer_; }
  const Decoder& decoder() const { return decoder_; }
  Optimizer& optimizer() { return *optimizer_; }
  Communicator& world() { return *comm_; }
  // The ranks holding the same experts and model piece as this one (expert gradients are reduced
  // over it).
  Communicator& replicas() { return *replica_comm_; }
  // The ranks of this rank's model group: the same rows, the other pieces of the model-split
  // parameters (size mesh().model_ranks; the decoder's tensor-parallel collectives).
  Communicator& model_group() { return *model_comm_; }
  // The ranks holding the same model piece as this one: one rank per model group, so every data
  // shard once (shared gradients, loss sums, data counters).
  Communicator& pieces() { return *piece_comm_; }

  // Collective: OK when every parameter and optimizer statistic on every rank is finite, else an
  // error naming the first tensor (lowest rank first) holding a NaN or infinity and the element's
  // index in this rank's piece of it.
  absl::Status CheckParamsFinite();

  // What a checkpoint needs besides parameters and optimizer state: the next step, and the data
  // iterator state of each data shard this rank hosts (opaque strings, one per local shard; the
  // ranks of one model group return the same).
  std::vector<std::string> DataStates() const;
  // Restores a checkpoint's progress: the step to take next and the local chips' data states.
  // Empty data_states (a checkpoint from another chip count): sources that can seek to the step
  // do (the generated stream); the others start afresh, and the result says how many did.
  absl::StatusOr<int64_t> RestoreProgress(int64_t next_step,
                                          const std::vector<std::string>& data_states);

  // Collective: brings the extras up to date on every rank (sums the ranks' pending token-id
  // counts) and fills their buffers. Call before reading CheckpointExtras for a save.
  void SyncCheckpointExtras();
  // The extras of this job: with token-id routing "extra.token_id_routing.stats", the
  // TokenIdTables statistics encoded as floats, (M, V, 1 + 2E, 2) (TokenIdTables::Encode); with
  // bias balancing "extra.router.expert_bias", (layers, E) (model/expert_bias.h).
  std::vector<CheckpointExtra> CheckpointExtras();
  // After a restore wrote the extras' buffers (or zeroed them, for a checkpoint without them):
  // takes them as the statistics, drops pending counts and any built table; the table is rebuilt
  // at the next step >= S.
  void ExtrasRestored();

  // Whether the step about to be taken (step()) leaves the router alone.
  bool RouterFrozen() const;
  // Null unless router.token_id_routing_after_steps is set (and the model has experts).
  const TokenIdTables* token_id_tables() const { return token_tables_.get(); }
  // Null unless router.bias_update_rate > 0 (and the model has experts).
  const ExpertBias* expert_bias() const { return expert_bias_.get(); }
  // The training routing: the job's, with the selection biases and, for a global-batch
  // load-balance loss, pieces() as the ranks holding the batch.
  RoutingConfig TrainRouting() const;
  // The routing of MoE layer `layer` in the last forward (its last microbatch); null for dense.
  const Routing* last_routing(int64_t layer) const { return decoder_.routing(layer); }

 private:
  Trainer(const JobSpec& spec, const Mesh& mesh, Communicator* comm,
          std::unique_ptr<Communicator> owned_comm,
          std::vector<std::unique_ptr<BatchSource>> sources);
  std::vector<std::pair<std::string, int64_t>> DataCounters();
  LossScales ScalesFor(const Batch& local_batch);
  Batch Microbatch(const Batch& local_batch, int64_t m) const;
  void ReduceGradients();
  double GlobalGradNorm();
  // At step S of token-id routing (or the first step after a resume past it): builds the tables
  // and routes by them from now on. Collective.
  void MaybeSwitchToTokenIdRouting();

  JobSpec spec_;
  Mesh mesh_;
  Mesh shard_mesh_;
  std::unique_ptr<Communicator> owned_comm_;
  Communicator* comm_;
  std::unique_ptr<Communicator> model_comm_;    // this rank's model group
  std::unique_ptr<Communicator> piece_comm_;    // ranks holding the same model piece
  std::unique_ptr<Communicator> replica_comm_;  // ranks holding the same experts and piece
  ModelDims dims_;
  ParamLayout layout_;
  Tensor params_;
  Tensor grads_;
  std::unique_ptr<Optimizer> optimizer_;  // train.optimizer: Adafactor or AdamW
  // Drives the gradient buckets' and the chunked expert exchange's collectives (a thread of its
  // own when MPI allows it); declared before its users, so destroyed after them.
  std::unique_ptr<CommThread> comm_thread_;
  std::unique_ptr<ExpertParallelRunner> runner_;
  std::unique_ptr<ExpertBias> expert_bias_;  // router.bias_update_rate > 0
  Decoder decoder_;
  std::vector<std::unique_ptr<BatchSource>> sources_;  // one per local data shard
  int64_t step_ = 0;
  int64_t skipped_steps_ = 0;
  bool last_step_skipped_ = false;
  PhaseTimer phase_timer_;  // the phases of the step TryStep is taking
  std::unique_ptr<TokenIdTables> token_tables_;  // router.token_id_routing_after_steps > 0
  std::vector<float> encoded_extras_;            // the checkpoint's view of token_tables_
  FrozenParams frozen_router_;                   // every MoE layer's router
  // The gradient sums: duplicates of pieces() and replicas() for comm_thread_ alone, and the
  // buckets (declared last: destroyed first, after their reductions finish).
  std::unique_ptr<Communicator> reduce_piece_comm_, reduce_replica_comm_;
  std::unique_ptr<GradReducer> reducer_;
};

}  // namespace openmoe
