#include "launch/trainer.h"

#include <cmath>

#include "core/check.h"
#include "core/kernels.h"
#include "core/timer.h"
#include "model/schedule.h"

namespace openmoe {

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const JobSpec& spec, Communicator* comm) {
  std::unique_ptr<Communicator> owned;
  if (comm == nullptr) {
    owned = std::make_unique<SelfCommunicator>();
    comm = owned.get();
  }
  absl::StatusOr<Mesh> mesh = MakeMesh(spec, comm->size(), comm->rank());
  if (!mesh.ok()) return mesh.status();
  return std::unique_ptr<Trainer>(new Trainer(spec, *mesh, comm, std::move(owned)));
}

Trainer::Trainer(const JobSpec& spec, const Mesh& mesh, Communicator* comm,
                 std::unique_ptr<Communicator> owned_comm)
    : spec_(spec),
      mesh_(mesh),
      owned_comm_(std::move(owned_comm)),
      comm_(comm),
      replica_comm_(comm->Split(mesh.ReplicaColor(), comm->rank())),
      dims_(DimsFromSpec(spec)),
      layout_(dims_, {mesh.first_local_expert, mesh.num_local_experts}),
      params_({layout_.total_size()}),
      grads_({layout_.total_size()}),
      optimizer_(spec.optimizer(), layout_),
      runner_(dims_.num_experts > 0 ? std::make_unique<ExpertParallelRunner>(mesh_, comm_) : nullptr),
      decoder_(layout_, RoutingFromSpec(spec, /*eval=*/false), runner_.get()),
      source_(dims_.vocab_size, spec.data().synthetic().branching(), spec.data().synthetic().seed()) {
  InitParams(layout_, spec.train().seed(), params_.data());
}

Batch Trainer::NextLocalBatch() {
  const int64_t rows = spec_.train().batch_rows();
  const int64_t rows_per_chip = rows / mesh_.num_chips;
  Batch batch;
  source_.FillRows(step_ * rows + mesh_.FirstChip() * rows_per_chip,
                   rows_per_chip * mesh_.chips_per_rank, spec_.train().seq_len(), &batch);
  return batch;
}

Batch Trainer::Microbatch(const Batch& local, int64_t m) const {
  const int64_t micro = spec_.train().microbatches();
  if (micro == 1) return local;
  const int64_t rows_per_chip = local.rows / mesh_.chips_per_rank;
  const int64_t rows = rows_per_chip / micro;
  Batch out;
  for (int64_t c = 0; c < mesh_.chips_per_rank; ++c) out.Append(local.Slice(c * rows_per_chip + m * rows, rows));
  return out;
}

LossScales Trainer::ScalesFor(const Batch& local_batch) {
  double weight = 0;
  for (float w : local_batch.loss_weights) weight += w;
  comm_->AllReduceSum(&weight, 1);
  const double tokens = static_cast<double>(spec_.train().batch_rows() * spec_.train().seq_len());
  const double moe_layers = static_cast<double>(dims_.NumMoeLayers());
  LossScales s;
  s.lm_normalizer = weight > 0 ? 1.0 / weight : 0.0;
  s.output_z_weight = spec_.loss().output_z_loss_weight();
  if (moe_layers > 0) {
    const double groups = tokens / static_cast<double>(spec_.router().group_size());
    s.load_balance_scale = spec_.router().aux_loss_weight() / (moe_layers * groups);
    s.router_z_scale = spec_.router().z_loss_weight() / (moe_layers * tokens);
  }
  return s;
}

void Trainer::ReduceGradients() {
  const int64_t split = layout_.expert_offset();
  comm_->AllReduceSum(grads_.data(), split);
  replica_comm_->AllReduceSum(grads_.data() + split, layout_.total_size() - split);
}

double Trainer::GlobalGradNorm() {
  const int64_t split = layout_.expert_offset();
  // Shared gradients are identical on every rank after the reduction; each expert's appear on
  // every rank of its replica set, so their world sum counts each expert that many times.
  double expert_sq = SumSquares(grads_.data() + split, layout_.total_size() - split);
  comm_->AllReduceSum(&expert_sq, 1);
  expert_sq /= replica_comm_->size();
  return std::sqrt(SumSquares(grads_.data(), split) + expert_sq);
}

void Trainer::ReduceSums(DecoderSums* sums) {
  // Flatten every sum into one vector of doubles for a single reduction.
  std::vector<double> flat = {sums->lm.cross_entropy, sums->lm.z_loss, sums->lm.weight,
                              static_cast<double>(sums->lm.correct), sums->loss};
  for (const RouterLossSums& r : sums->router) {
    flat.push_back(r.load_balance);
    flat.push_back(r.z_loss);
  }
  auto visit_stats = [&](auto&& f) {
    for (RoutingStats& st : sums->routing) {
      for (auto* v : {&st.routed_per_expert, &st.kept_per_expert, &st.dropped_by_choice,
                      &st.dropped_by_position_bucket, &st.routed_by_position_bucket})
        for (int64_t& x : *v) f(x);
      f(st.tokens);
      f(st.tokens_fully_dropped);
    }
  };
  std::vector<int64_t> counts;
  visit_stats([&](int64_t& x) { counts.push_back(x); });
  for (const RoutingStats& st : sums->routing) flat.push_back(st.entropy_sum);
  comm_->AllReduceSum(flat.data(), static_cast<int64_t>(flat.size()));
  comm_->AllReduceSum(counts.data(), static_cast<int64_t>(counts.size()));
  size_t i = 0;
  sums->lm.cross_entropy = flat[i++];
  sums->lm.z_loss = flat[i++];
  sums->lm.weight = flat[i++];
  sums->lm.correct = static_cast<int64_t>(flat[i++]);
  sums->loss = flat[i++];
  for (RouterLossSums& r : sums->router) {
    r.load_balance = flat[i++];
    r.z_loss = flat[i++];
  }
  size_t j = 0;
  visit_stats([&](int64_t& x) { x = counts[j++]; });
  for (RoutingStats& st : sums->routing) st.entropy_sum = flat[i++];
}

DecoderSums Trainer::ComputeGradients(const Batch& local_batch) {
  const LossScales scales = ScalesFor(local_batch);
  const int64_t micro = spec_.train().microbatches();
  grads_.Zero();
  DecoderSums total;
  for (int64_t m = 0; m < micro; ++m) {
    const Batch mb = Microbatch(local_batch, m);
    total.Add(decoder_.Forward(params_.data(), mb, scales, spec_.logging().position_buckets()));
    decoder_.Backward(params_.data(), mb, scales, grads_.data());
  }
  ReduceGradients();
  ReduceSums(&total);
  return total;
}

StepResult Trainer::Step() {
  Timer timer;
  StepResult r;
  r.step = step_;
  const Batch batch = NextLocalBatch();
  r.sums = ComputeGradients(batch);
  r.loss = r.sums.loss;
  r.tokens = spec_.train().batch_rows() * spec_.train().seq_len();
  r.grad_norm = GlobalGradNorm();
  r.learning_rate = LearningRate(spec_.schedule(), step_);
  optimizer_.Update(step_, r.learning_rate, params_.data(), grads_.data(), r.grad_norm);
  ++step_;
  r.seconds = timer.Seconds();
  return r;
}

std::vector<std::string> Trainer::DataStates() const {
  // The generated stream is addressed by global row, so the step says everything.
  return std::vector<std::string>(mesh_.chips_per_rank, std::to_string(step_));
}

absl::Status Trainer::RestoreProgress(int64_t next_step, const std::vector<std::string>& data_states) {
  if (static_cast<int64_t>(data_states.size()) != mesh_.chips_per_rank) {
    return absl::InvalidArgumentError("checkpoint data state: expected one entry per local chip");
  }
  step_ = next_step;
  return absl::OkStatus();
}

}  // namespace openmoe
