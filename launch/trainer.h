// Trainer: one rank's share of the model, its gradients and optimizer state, and one training step
// on the simulated chip mesh.
//
// Every rank calls every method (they are collective over the world communicator). A step:
//   1. each rank takes the rows of its chips (chip c holds global rows [c * rpc, (c + 1) * rpc)
//      of the global batch, rpc = batch_rows / num_chips);
//   2. microbatch m takes every local chip's m-th slice of rows, chip-major, so routing groups stay
//      inside one chip; forward and backward accumulate exact gradients (every loss term is
//      normalised by global counts, see LossScales);
//   3. gradients are summed: shared parameters over all ranks, each expert over the ranks that
//      hold it; loss sums and routing statistics over all ranks;
//   4. the optimizer (Adafactor or AdamW) updates, identically on every replica.
// The same job gives the same losses on any number of ranks (to float rounding).
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
#include "launch/phase_report.h"
#include "model/optimizer.h"
#include "model/decoder.h"
#include "model/params.h"
#include "parallel/communicator.h"
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
};

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
  const ParamLayout& layout() const { return layout_; }
  Tensor& params() { return params_; }
  Tensor& grads() { return grads_; }
  int64_t step() const { return step_; }
  // The last step was skipped (non-finite loss or gradient): the parameters are suspect.
  bool last_step_skipped() const { return last_step_skipped_; }
  const ExpertParallelRunner* runner() const { return runner_.get(); }
  Optimizer& optimizer() { return *optimizer_; }
  Communicator& world() { return *comm_; }
  // The ranks holding the same experts as this one (expert gradients are reduced over it).
  Communicator& replicas() { return *replica_comm_; }

  // Collective: OK when every parameter and optimizer statistic on every rank is finite, else an
  // error naming the first tensor (lowest rank first) holding a NaN or infinity and the element's
  // index in this rank's piece of it.
  absl::Status CheckParamsFinite();

  // What a checkpoint needs besides parameters and optimizer state: the next step, and the data
  // iterator state of each chip this rank hosts (opaque strings, one per local chip).
  std::vector<std::string> DataStates() const;
  // Restores a checkpoint's progress: the step to take next and the local chips' data states.
  // Empty data_states (a checkpoint from another chip count): sources that can seek to the step
  // do (the generated stream); the others start afresh, and the result says how many did.
  absl::StatusOr<int64_t> RestoreProgress(int64_t next_step,
                                          const std::vector<std::string>& data_states);

 private:
  Trainer(const JobSpec& spec, const Mesh& mesh, Communicator* comm,
          std::unique_ptr<Communicator> owned_comm,
          std::vector<std::unique_ptr<BatchSource>> sources);
  std::vector<std::pair<std::string, int64_t>> DataCounters();
  LossScales ScalesFor(const Batch& local_batch);
  Batch Microbatch(const Batch& local_batch, int64_t m) const;
  void ReduceGradients();
  void ReduceSums(DecoderSums* sums);
  double GlobalGradNorm();

  JobSpec spec_;
  Mesh mesh_;
  std::unique_ptr<Communicator> owned_comm_;
  Communicator* comm_;
  std::unique_ptr<Communicator> replica_comm_;  // ranks holding the same experts
  ModelDims dims_;
  ParamLayout layout_;
  Tensor params_;
  Tensor grads_;
  std::unique_ptr<Optimizer> optimizer_;  // train.optimizer: Adafactor or AdamW
  std::unique_ptr<ExpertParallelRunner> runner_;
  Decoder decoder_;
  std::vector<std::unique_ptr<BatchSource>> sources_;  // one per local chip
  int64_t step_ = 0;
  int64_t skipped_steps_ = 0;
  bool last_step_skipped_ = false;
  PhaseTimer phase_timer_;  // the phases of the step TryStep is taking
};

}  // namespace openmoe
