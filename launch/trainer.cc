#include "launch/trainer.h"

#include <cmath>
#include <cstdlib>

#include "absl/strings/str_format.h"

#include "core/check.h"
#include "core/kernels.h"
#include "core/timer.h"
#include "model/schedule.h"
#include "parallel/collective_status.h"

namespace openmoe {

namespace {

std::vector<int64_t> MoeLayers(const ModelDims& dims) {
  std::vector<int64_t> layers;
  for (int64_t i = 0; i < dims.num_layers; ++i)
    if (dims.IsMoeLayer(i)) layers.push_back(i);
  return layers;
}

// A diagnostic for bench/multinode_bench.sh: OPENMOE_PROGRESS=poll drives the nonblocking
// collectives from the compute thread (at each sub-block's end), as happens without
// MPI_THREAD_MULTIPLE, to measure what the progress thread buys.
bool ProgressFromComputeThread() {
  const char* mode = std::getenv("OPENMOE_PROGRESS");
  return mode != nullptr && std::string(mode) == "poll";
}

std::vector<std::string> RouterNames(const ModelDims& dims) {
  std::vector<std::string> names;
  for (int64_t i : MoeLayers(dims)) names.push_back(absl::StrFormat("layers.%d.moe.router", i));
  return names;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const JobSpec& spec, Communicator* comm) {
  std::unique_ptr<Communicator> owned;
  if (comm == nullptr) {
    owned = std::make_unique<SelfCommunicator>();
    comm = owned.get();
  }
  absl::StatusOr<Mesh> mesh = MakeMesh(spec, comm->size(), comm->rank());
  if (!mesh.ok()) return mesh.status();
  // Data shard s reads shard s of num_shards: the global batch does not depend on the ranks.
  std::vector<std::unique_ptr<BatchSource>> sources;
  absl::Status data_status = absl::OkStatus();
  for (int64_t s = 0; s < mesh->ShardsPerRank() && data_status.ok(); ++s) {
    absl::StatusOr<std::unique_ptr<BatchSource>> source =
        MakeBatchSource(spec, mesh->FirstShard() + s, mesh->NumShards());
    if (source.ok()) {
      sources.push_back(std::move(*source));
    } else {
      data_status = source.status();
    }
  }
  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(*comm, data_status));
  return std::unique_ptr<Trainer>(
      new Trainer(spec, *mesh, comm, std::move(owned), std::move(sources)));
}

Trainer::Trainer(const JobSpec& spec, const Mesh& mesh, Communicator* comm,
                 std::unique_ptr<Communicator> owned_comm,
                 std::vector<std::unique_ptr<BatchSource>> sources)
    : spec_(spec),
      mesh_(mesh),
      shard_mesh_(mesh.ShardMesh()),
      owned_comm_(std::move(owned_comm)),
      comm_(comm),
      model_comm_(comm->Split(mesh.ModelGroupColor(), comm->rank())),
      piece_comm_(comm->Split(mesh.ModelPieceColor(), comm->rank())),
      replica_comm_(comm->Split(mesh.ReplicaColor(), comm->rank())),
      dims_(DimsFromSpec(spec)),
      layout_(dims_, {.first_expert = mesh.first_local_expert,
                      .num_local_experts = mesh.num_local_experts,
                      .model_parts = mesh.model_ranks,
                      .model_index = mesh.model_index}),
      params_({layout_.total_size()}),
      grads_({layout_.total_size()}),
      optimizer_(MakeOptimizer(spec, layout_, model_comm_.get())),
      comm_thread_(std::make_unique<CommThread>(comm->size() > 1 && comm->ThreadSafe() &&
                                                !ProgressFromComputeThread())),
      runner_(dims_.num_experts > 0
                  ? std::make_unique<ExpertParallelRunner>(shard_mesh_, piece_comm_.get(),
                                                           spec.train().expert_exchange_chunks(),
                                                           comm_thread_.get())
                  : nullptr),
      expert_bias_(dims_.num_experts > 0 && spec.router().bias_update_rate() > 0
                       ? std::make_unique<ExpertBias>(dims_.num_layers, dims_.num_experts,
                                                      spec.router().bias_update_rate())
                       : nullptr),
      decoder_(layout_, TrainRouting(), runner_.get(), model_comm_.get()),
      sources_(std::move(sources)),
      frozen_router_(layout_, *optimizer_, RouterNames(dims_)) {
  InitParams(layout_, spec.train().seed(), params_.data());
  // Gradient sums (README "Multi-node: communication behind compute"): shared parameters over the
  // ranks holding the same piece, experts over their replicas, each on a communicator of its own
  // so that the progress thread's collectives never meet the compute thread's.
  const TrainConfig& train = spec.train();
  reduce_piece_comm_ = piece_comm_->Duplicate();
  reduce_replica_comm_ = replica_comm_->Duplicate();
  const int64_t split = layout_.expert_offset();
  reducer_ = std::make_unique<GradReducer>(
      grads_.data(),
      std::vector<GradRegion>{{0, split, reduce_piece_comm_.get()},
                              {split, layout_.total_size(), reduce_replica_comm_.get()}},
      GradReducerOptionsFor(train.overlap_grad_reduce(), train.grad_bucket_mb(),
                            train.grad_reduce_dtype() == BF16 ? GradWire::kBf16 : GradWire::kFp32),
      comm_thread_.get(), std::vector<SparseRows>{decoder_.EmbeddingGradRows()});
  if (dims_.num_experts > 0 && spec.router().token_id_routing_after_steps() > 0) {
    token_tables_ = std::make_unique<TokenIdTables>(MoeLayers(dims_), dims_.padded_vocab_size,
                                                    dims_.num_experts, dims_.top_k);
  }
}

absl::StatusOr<Batch> Trainer::NextLocalBatch() {
  const int64_t rows_per_shard = spec_.train().batch_rows() / mesh_.NumShards();
  Batch local, shard_rows;
  int64_t shard = mesh_.FirstShard();
  for (const std::unique_ptr<BatchSource>& source : sources_) {
    OPENMOE_RETURN_IF_ERROR(source->Next(rows_per_shard, spec_.train().seq_len(), &shard_rows));
    // The rows' place in the global batch (shard s holds rows [s * rps, (s + 1) * rps)) keys the
    // router jitter, so its noise does not depend on the layout.
    shard_rows.SetOrigin(step_, shard++ * rows_per_shard);
    local.Append(shard_rows);
  }
  return local;
}

std::vector<std::pair<std::string, int64_t>> Trainer::DataCounters() {
  // Every chip's source reports the same names in the same order (same job).
  std::vector<std::pair<std::string, int64_t>> total = sources_[0]->Counters();
  for (size_t c = 1; c < sources_.size(); ++c) {
    const auto more = sources_[c]->Counters();
    for (size_t i = 0; i < total.size() && i < more.size(); ++i) total[i].second += more[i].second;
  }
  std::vector<int64_t> values;
  for (const auto& [name, value] : total) values.push_back(value);
  piece_comm_->AllReduceSum(values.data(), static_cast<int64_t>(values.size()));
  for (size_t i = 0; i < total.size(); ++i) total[i].second = values[i];
  return total;
}

Batch Trainer::Microbatch(const Batch& local, int64_t m) const {
  const int64_t micro = spec_.train().microbatches();
  if (micro == 1) return local;
  const int64_t shards = mesh_.ShardsPerRank();
  const int64_t rows_per_shard = local.rows / shards;
  const int64_t rows = rows_per_shard / micro;
  Batch out;
  for (int64_t s = 0; s < shards; ++s) out.Append(local.Slice(s * rows_per_shard + m * rows, rows));
  return out;
}

LossScales Trainer::ScalesFor(const Batch& local_batch) {
  double weight = 0;
  for (float w : local_batch.loss_weights) weight += w;
  piece_comm_->AllReduceSum(&weight, 1);
  return MakeLossScales(
      LossCountsFor(spec_, weight, spec_.train().batch_rows() * spec_.train().seq_len()),
      LossWeightsFor(spec_));
}

void Trainer::ReduceGradients() {
  ScopedPhase phase(Phase::kGradAllReduce);  // what is left to wait for after the backward
  reducer_->FinishStep();
}

double Trainer::GlobalGradNorm() {
  // After the reduction every element is on several ranks: a shared piece on every rank of
  // pieces(), a replicated shared parameter (norm scales, routers) on every rank, an expert's piece
  // on every rank of replicas() (and on every rank of the model group too, when not model-split).
  // The world sum of each rank's squares divided by its element's copies counts each once.
  const double piece_copies = piece_comm_->size(), world_copies = comm_->size();
  const double replica_copies = replica_comm_->size();
  double sq = 0;
  for (const ParamInfo& p : layout_.params()) {
    const double copies = p.is_expert ? replica_copies * (p.model_split() ? 1 : mesh_.model_ranks)
                                      : (p.model_split() ? piece_copies : world_copies);
    sq += SumSquares(grads_.data() + p.offset, p.size) / copies;
  }
  comm_->AllReduceSum(&sq, 1);
  return std::sqrt(sq);
}

void ReduceDecoderSums(Communicator& comm, DecoderSums* sums) {
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
  comm.AllReduceSum(flat.data(), static_cast<int64_t>(flat.size()));
  comm.AllReduceSum(counts.data(), static_cast<int64_t>(counts.size()));
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
  reducer_->BeginStep();
  // The embedding's gradient is final only when the backward ends; only the rows some rank's
  // tokens looked up cross the link.
  reducer_->SetRowsWritten(decoder_.EmbeddingGradRows().begin,
                           decoder_.EmbeddingRowsWritten(local_batch));
  grads_.Zero();
  DecoderSums total;
  for (int64_t m = 0; m < micro; ++m) {
    const Batch mb = Microbatch(local_batch, m);
    // Only the last microbatch's backward leaves gradients final.
    decoder_.SetGradientListener(m + 1 == micro ? reducer_.get() : nullptr);
    total.Add(decoder_.Forward(params_.data(), mb, scales, spec_.logging().position_buckets(),
                                  grads_.data()));
    if (token_tables_ != nullptr && !token_tables_->built()) {
      // The router's decisions of this microbatch, for the table built at the switch.
      for (int64_t layer : token_tables_->moe_layers())
        token_tables_->Count(layer, *decoder_.routing(layer), mb.tokens.data());
    }
    decoder_.Backward(params_.data(), mb, scales, grads_.data());
  }
  decoder_.SetGradientListener(nullptr);
  ReduceGradients();
  ReduceDecoderSums(*piece_comm_, &total);
  return total;
}

StepResult Trainer::Step() {
  absl::StatusOr<StepResult> r = TryStep();
  OPENMOE_CHECK_MSG(r.ok(), "%s", std::string(r.status().message()).c_str());
  return *std::move(r);
}

absl::StatusOr<StepResult> Trainer::TryStep() {
  Timer timer;
  phase_timer_.set_measure_cpu(spec_.logging().phase_timing());  // the progress line's cores
  ScopedPhaseTimer timing(&phase_timer_);  // stops on every return path
  ScopedPhase phase(Phase::kData);
  StepResult r;
  r.step = step_;
  absl::StatusOr<Batch> batch = NextLocalBatch();
  OPENMOE_RETURN_IF_ERROR(AgreeOnFirstError(*comm_, batch.status()));
  MaybeSwitchToTokenIdRouting();
  phase.Switch(Phase::kOther);  // ComputeGradients times its parts
  r.sums = ComputeGradients(*batch);
  r.loss = r.sums.loss;
  r.tokens = spec_.train().batch_rows() * spec_.train().seq_len();
  const bool router_frozen = RouterFrozen();
  if (router_frozen) frozen_router_.ZeroGrads(grads_.data());
  phase.Switch(Phase::kOptimizer);
  r.grad_norm = GlobalGradNorm();
  r.learning_rate = LearningRate(spec_.schedule(), step_, spec_.train().steps());
  // Loss and norm are reduced over every rank, so every rank takes the same branch.
  r.skipped = !std::isfinite(r.loss) || !std::isfinite(r.grad_norm);
  if (r.skipped) {
    // A finite step followed by a non-finite one: either this batch is bad (skip it), or the
    // previous update broke the parameters, which no skipping repairs.
    const absl::Status finite = CheckParamsFinite();
    if (!finite.ok()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "step %d: %s: the update of step %d made the parameters non-finite (learning rate too "
          "high?); stopping without saving",
          step_ + 1, finite.message(), step_));
    }
    ++skipped_steps_;
    if (skipped_steps_ > spec_.train().max_skipped_steps()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "step %d: loss %g, gradient norm %g: %d steps had a non-finite loss or gradient, more "
          "than train.max_skipped_steps=%d; stopping",
          step_ + 1, r.loss, r.grad_norm, skipped_steps_, spec_.train().max_skipped_steps()));
    }
  } else {
    if (router_frozen) frozen_router_.Save(params_.data(), optimizer_->state());
    optimizer_->Update(step_, r.learning_rate, params_.data(), grads_.data(), r.grad_norm);
    if (router_frozen) frozen_router_.Restore(params_.data(), optimizer_->state());
    // The loads are the step's choices summed over every rank: the same update everywhere.
    if (expert_bias_ != nullptr && !router_frozen) expert_bias_->Update(r.sums.routing);
  }
  if (expert_bias_ != nullptr) r.expert_bias = expert_bias_->biases();
  r.skipped_steps = skipped_steps_;
  last_step_skipped_ = r.skipped;
  ++step_;
  phase.Switch(Phase::kData);
  r.data_counters = DataCounters();
  r.seconds = timer.Seconds();
  phase_timer_.Stop();  // the reductions below are not part of the step's phases
  r.timing = ReducePhaseTimes(phase_timer_, *comm_);
  if (runner_ != nullptr) {
    const ExchangeCounters& c = runner_->counters();
    std::vector<int64_t> sums = {c.exchanges, c.rows_remote, c.rows_local, c.bytes_remote};
    comm_->AllReduceSum(sums.data(), static_cast<int64_t>(sums.size()));
    r.exchange = {.exchanges = sums[0], .rows_remote = sums[1], .rows_local = sums[2],
                  .bytes_remote = sums[3]};
  }
  return r;
}

absl::Status Trainer::CheckParamsFinite() {
  const int64_t bad = FirstNonFinite(params_.data(), layout_.total_size());
  std::string what;
  for (const ParamInfo& p : layout_.params()) {
    if (bad >= p.offset && bad < p.offset + p.size) {
      what = absl::StrFormat("parameter %s holds %g at index %d", p.name, params_[bad],
                             bad - p.offset);
    }
  }
  if (what.empty()) {
    const Tensor& state = optimizer_->state();
    const int64_t bad_state = FirstNonFinite(state.data(), state.size());
    if (bad_state >= 0) {
      what = absl::StrFormat("%s state holds %g at index %d", OptimizerName(optimizer_->kind()),
                             state[bad_state], bad_state);
    }
  }
  return AgreeOnFirstError(*comm_, what.empty() ? absl::OkStatus() : absl::DataLossError(what));
}

std::vector<std::string> Trainer::DataStates() const {
  std::vector<std::string> states;
  for (const std::unique_ptr<BatchSource>& source : sources_) states.push_back(source->SaveState());
  return states;
}

absl::StatusOr<int64_t> Trainer::RestoreProgress(int64_t next_step,
                                                 const std::vector<std::string>& data_states) {
  int64_t restarted = 0;
  if (data_states.empty()) {
    for (auto& source : sources_)
      restarted += source->SeekToStep(next_step, spec_.train().batch_rows()) ? 0 : 1;
  } else {
    if (static_cast<int64_t>(data_states.size()) != mesh_.ShardsPerRank()) {
      return absl::InvalidArgumentError(
          "checkpoint data state: expected one entry per local data shard");
    }
    for (size_t c = 0; c < sources_.size(); ++c) {
      OPENMOE_RETURN_IF_ERROR(sources_[c]->RestoreState(data_states[c]));
    }
  }
  step_ = next_step;
  return restarted;
}

bool Trainer::RouterFrozen() const {
  const int64_t freeze = spec_.router().freeze_after_steps();
  const int64_t table = token_tables_ != nullptr ? spec_.router().token_id_routing_after_steps() : 0;
  return (freeze > 0 && step_ >= freeze) || (table > 0 && step_ >= table);
}

void Trainer::SyncCheckpointExtras() {
  if (token_tables_ == nullptr) return;
  if (!token_tables_->built()) {  // built: counting is over
    std::vector<int64_t>& pending = token_tables_->pending();
    // Integers: the sum does not depend on the ranks nor on when the syncs happen. The ranks of a
    // model group counted the same rows: one of each group, pieces(), sums.
    piece_comm_->AllReduceSum(pending.data(), static_cast<int64_t>(pending.size()));
    token_tables_->MergePending();
  }
  int64_t n = 1;
  for (int64_t d : token_tables_->EncodedShape()) n *= d;
  encoded_extras_.resize(static_cast<size_t>(n));
  token_tables_->Encode(encoded_extras_.data());
}

std::vector<CheckpointExtra> Trainer::CheckpointExtras() {
  std::vector<CheckpointExtra> extras;
  if (token_tables_ != nullptr) {
    int64_t n = 1;
    for (int64_t d : token_tables_->EncodedShape()) n *= d;
    encoded_extras_.resize(static_cast<size_t>(n));  // filled by SyncCheckpointExtras or a restore
    extras.push_back({.name = std::string(kCheckpointExtraPrefix) + "token_id_routing.stats",
                      .shape = token_tables_->EncodedShape(),
                      .data = encoded_extras_.data()});
  }
  if (expert_bias_ != nullptr) {  // the same on every rank: nothing to sync
    extras.push_back({.name = kExpertBiasCheckpointName,
                      .shape = {expert_bias_->layers(), expert_bias_->num_experts()},
                      .data = expert_bias_->data()});
  }
  return extras;
}

void Trainer::ExtrasRestored() {
  if (token_tables_ == nullptr) return;  // the biases were restored in place
  token_tables_->Decode(encoded_extras_.data());
  token_tables_->Reset();
  decoder_.SetRouting(TrainRouting());
}

RoutingConfig Trainer::TrainRouting() const {
  RoutingConfig routing = RoutingFromSpec(spec_, /*eval=*/false);
  routing.balance_comm = piece_comm_.get();
  routing.expert_bias = expert_bias_.get();
  return routing;
}

void Trainer::MaybeSwitchToTokenIdRouting() {
  if (token_tables_ == nullptr || token_tables_->built() ||
      step_ < spec_.router().token_id_routing_after_steps()) {
    return;
  }
  SyncCheckpointExtras();  // every rank is at the same step: collective on all or none
  token_tables_->Build();
  RoutingConfig routing = TrainRouting();
  routing.token_id_tables = token_tables_.get();
  decoder_.SetRouting(routing);
}

}  // namespace openmoe
