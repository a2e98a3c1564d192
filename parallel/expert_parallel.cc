#include "parallel/expert_parallel.h"

#include <algorithm>
#include <cstring>

#include "core/bf16.h"
#include "core/check.h"
#include "core/kernels.h"
#include "core/phase_timer.h"

namespace openmoe {

namespace {

std::vector<int64_t> Scaled(const std::vector<int64_t>& rows, int64_t d) {
  std::vector<int64_t> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) out[i] = rows[i] * d;
  return out;
}

// Row k of `chunks` equal parts of a run of n rows: part k is [ChunkStart(k), ChunkStart(k + 1)).
int64_t ChunkStart(int64_t k, int64_t n, int64_t chunks) { return k * n / chunks; }

// One all-to-all-v of rows on the progress thread; kBf16 packs and unpacks there too.
class RowExchangeTask final : public AsyncTask {
 public:
  RowExchangeTask(Communicator* comm, const float* send, std::vector<int64_t> send_counts,
                  float* recv, std::vector<int64_t> recv_counts, bool bf16)
      : comm_(comm), send_(send), recv_(recv), send_counts_(std::move(send_counts)),
        recv_counts_(std::move(recv_counts)), bf16_(bf16) {}

  const Communicator* comm() const override { return comm_; }
  int stages() const override { return 1; }

  std::unique_ptr<PendingCollective> Begin() override {
    if (!bf16_) return comm_->StartAllToAllV(send_, send_counts_, recv_, recv_counts_);
    int64_t sent = 0, received = 0;
    for (size_t q = 0; q < send_counts_.size(); ++q) {
      sent += send_counts_[q];
      received += recv_counts_[q];
    }
    wire_send_.resize(sent);
    wire_recv_.resize(received);
    FloatToBf16(send_, wire_send_.data(), sent);
    return comm_->StartAllToAllV(wire_send_.data(), send_counts_, wire_recv_.data(), recv_counts_);
  }
  std::unique_ptr<PendingCollective> Next() override {
    if (bf16_) Bf16ToFloat(wire_recv_.data(), recv_, static_cast<int64_t>(wire_recv_.size()));
    return nullptr;
  }

 private:
  Communicator* comm_;
  const float* send_;
  float* recv_;
  std::vector<int64_t> send_counts_, recv_counts_;
  bool bf16_;
  std::vector<uint16_t> wire_send_, wire_recv_;
};

}  // namespace

ExpertParallelRunner::ExpertParallelRunner(const Mesh& mesh, Communicator* comm, int64_t chunks,
                                           CommThread* thread)
    : mesh_(mesh), comm_(comm), chunks_(chunks), thread_(thread) {
  OPENMOE_CHECK(chunks_ >= 1);
  OPENMOE_CHECK_MSG(chunks_ == 1 || thread_ != nullptr, "a chunked exchange needs a CommThread");
  if (chunks_ > 1 && !AllExpertsLocal()) rows_comm_ = comm_->Duplicate();
}

bool ExpertParallelRunner::AllExpertsLocal() const {
  // A rank hosting whole expert groups holds every expert, and its chips' tokens never leave it.
  return mesh_.chips_per_rank >= mesh_.expert_parallel;
}

void ExpertParallelRunner::Exchange(const MoeDims& dims, const float* send, float* recv,
                                    bool outbound, ExpertExchangeState& s) {
  ScopedMpiTime mpi(MpiDetail::kRows);  // the whole exchange (with bf16 packing, if on)
  const int64_t d = dims.d_model;
  const std::vector<int64_t>& send_rows = outbound ? s.send_rows : s.recv_rows;
  const std::vector<int64_t>& recv_rows = outbound ? s.recv_rows : s.send_rows;
  const bool bf16 = dims.precision == GemmPrecision::kBf16;
  CountRows(dims, send_rows);
  if (!bf16) {
    comm_->AllToAllV(send, Scaled(send_rows, d), recv, Scaled(recv_rows, d));
    return;
  }
  int64_t sent = 0, received = 0;
  for (int q = 0; q < comm_->size(); ++q) {
    sent += send_rows[q];
    received += recv_rows[q];
  }
  wire_send_.resize(sent * d);
  wire_recv_.resize(received * d);
  FloatToBf16(send, wire_send_.data(), sent * d);
  comm_->AllToAllV(wire_send_.data(), Scaled(send_rows, d), wire_recv_.data(),
                   Scaled(recv_rows, d));
  Bf16ToFloat(wire_recv_.data(), recv, received * d);
}

void ExpertParallelRunner::CountRows(const MoeDims& dims, const std::vector<int64_t>& send_rows) {
  const bool bf16 = dims.precision == GemmPrecision::kBf16;
  counters_.exchanges += 1;
  for (int q = 0; q < comm_->size(); ++q) {
    if (q == comm_->rank()) {
      counters_.rows_local += send_rows[q];
    } else {
      counters_.rows_remote += send_rows[q];
      counters_.bytes_remote += send_rows[q] * dims.d_model * (bf16 ? 2 : 4);
    }
  }
}

void ExpertParallelRunner::PlanExchange(const std::vector<int64_t>& counts,
                                        const std::vector<int64_t>& recv_counts,
                                        const Routing& routing, ExpertExchangeState& s) const {
  const int world = comm_->size();
  const int64_t num_experts = static_cast<int64_t>(counts.size()) / world;
  const int64_t first = mesh_.first_local_expert, local = mesh_.num_local_experts;
  s.send_rows.assign(world, 0);
  s.recv_rows.assign(world, 0);
  s.chunk_send_rows.assign(chunks_, std::vector<int64_t>(world, 0));
  s.chunk_recv_rows.assign(chunks_, std::vector<int64_t>(world, 0));
  s.chunk_blocks.assign(1, 0);
  s.blocks.clear();
  s.send_order.clear();
  // Sent: expert e's run goes to one rank (this rank's chips lie in one expert group), so its
  // chunk parts go there too; chunk-major send order lists every expert's part k, by expert.
  for (int q = 0; q < world; ++q) {
    for (int64_t e = 0; e < num_experts; ++e) {
      const int64_t n = counts[q * num_experts + e];
      s.send_rows[q] += n;
      for (int64_t k = 0; k < chunks_; ++k)
        s.chunk_send_rows[k][q] += ChunkStart(k + 1, n, chunks_) - ChunkStart(k, n, chunks_);
    }
  }
  if (chunks_ > 1) {
    for (int64_t k = 0; k < chunks_; ++k) {
      for (int64_t e = 0; e < num_experts; ++e) {
        const int64_t begin = routing.expert_offsets[e], n = routing.expert_offsets[e + 1] - begin;
        for (int64_t a = ChunkStart(k, n, chunks_); a < ChunkStart(k + 1, n, chunks_); ++a)
          s.send_order.push_back(begin + a);
      }
    }
  }
  // Received rows arrive chunk-major, then source-major, then by expert: each (chunk, source,
  // expert) run is a block that its expert processes where it lies, so no row is reordered.
  int64_t received = 0;
  for (int64_t k = 0; k < chunks_; ++k) {
    for (int q = 0; q < world; ++q) {
      for (int64_t e = 0; e < num_experts; ++e) {
        const int64_t total = recv_counts[q * num_experts + e];
        const int64_t n = ChunkStart(k + 1, total, chunks_) - ChunkStart(k, total, chunks_);
        if (n == 0) continue;
        OPENMOE_CHECK_MSG(e >= first && e < first + local,
                          "rows for expert %ld reached rank %d, which does not hold it",
                          static_cast<long>(e), comm_->rank());
        s.recv_rows[q] += n;
        s.chunk_recv_rows[k][q] += n;
        s.blocks.push_back({.begin = received, .rows = n, .local_expert = e - first});
        received += n;
      }
    }
    s.chunk_blocks.push_back(s.blocks.size());
  }
}

void ExpertParallelRunner::PipelinedExchange(const MoeDims& dims, const ExpertExchangeState& s,
                                             const float* out_send, float* out_recv,
                                             const float* back_send, float* back_recv,
                                             const std::function<void(BlockRange)>& compute,
                                             Phase out_phase, Phase compute_phase,
                                             Phase back_phase) {
  const int64_t d = dims.d_model;
  const bool bf16 = dims.precision == GemmPrecision::kBf16;
  // Row offsets of each chunk in the send order (A) and in the receive order (R).
  std::vector<int64_t> send_at(chunks_ + 1, 0), recv_at(chunks_ + 1, 0);
  for (int64_t k = 0; k < chunks_; ++k) {
    send_at[k + 1] = send_at[k];
    recv_at[k + 1] = recv_at[k];
    for (int q = 0; q < comm_->size(); ++q) {
      send_at[k + 1] += s.chunk_send_rows[k][q];
      recv_at[k + 1] += s.chunk_recv_rows[k][q];
    }
  }
  std::vector<std::unique_ptr<RowExchangeTask>> out(chunks_), back(chunks_);
  auto start_out = [&](int64_t k) {
    out[k] = std::make_unique<RowExchangeTask>(
        rows_comm_.get(), out_send + send_at[k] * d, Scaled(s.chunk_send_rows[k], d),
        out_recv + recv_at[k] * d, Scaled(s.chunk_recv_rows[k], d), bf16);
    thread_->Submit(out[k].get());
  };
  start_out(0);
  for (int64_t k = 0; k < chunks_; ++k) {
    if (k + 1 < chunks_) start_out(k + 1);  // in flight while chunk k computes
    {
      ScopedPhase phase(out_phase);
      ScopedMpiTime mpi(MpiDetail::kRows);
      thread_->Wait(out[k].get());
    }
    {
      ScopedPhase phase(compute_phase);
      compute({s.chunk_blocks[k], s.chunk_blocks[k + 1]});
    }
    back[k] = std::make_unique<RowExchangeTask>(
        rows_comm_.get(), back_send + recv_at[k] * d, Scaled(s.chunk_recv_rows[k], d),
        back_recv + send_at[k] * d, Scaled(s.chunk_send_rows[k], d), bf16);
    thread_->Submit(back[k].get());
  }
  ScopedPhase phase(back_phase);
  ScopedMpiTime mpi(MpiDetail::kRows);
  for (auto& task : back) thread_->Wait(task.get());
}

int64_t ExpertParallelRunner::held_bytes() const {
  int64_t bytes = static_cast<int64_t>((wire_send_.capacity() + wire_recv_.capacity()) *
                                       sizeof(uint16_t));
  for (const ExpertExchangeState& s : layers_) bytes += s.recv.capacity_bytes();
  return bytes;
}

const ExpertExchangeState* ExpertParallelRunner::exchange_state(int64_t layer) const {
  return layer >= 0 && layer < static_cast<int64_t>(layers_.size()) ? &layers_[layer] : nullptr;
}

void ExpertParallelRunner::Forward(int64_t layer, const MoeDims& dims, const MoeWeights& w,
                                   MoeCache* cache) {
  if (AllExpertsLocal()) {
    local_.Forward(layer, dims, w, cache);
    return;
  }
  ScopedPhase phase(Phase::kDispatchForward);  // within the decoder's experts scope
  OPENMOE_CHECK(layer >= 0);
  if (layer >= static_cast<int64_t>(layers_.size())) layers_.resize(layer + 1);
  const Routing& r = cache->routing;
  ExpertExchangeState& s = layers_[layer];
  const int64_t d = dims.d_model, num_experts = dims.num_experts;
  const int world = comm_->size();
  OPENMOE_CHECK(dims.tokens % mesh_.chips_per_rank == 0);
  const int64_t tokens_per_chip = dims.tokens / mesh_.chips_per_rank;

  // 1. Rows per (destination rank, expert). Here every local chip is in one expert group, so the
  //    destination rank grows with the expert id: dispatch order is already send order.
  std::vector<int64_t> counts(world * num_experts, 0);  // (ranks, E)
  int last_dest = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    for (int64_t a = r.expert_offsets[e]; a < r.expert_offsets[e + 1]; ++a) {
      const int64_t chip = mesh_.FirstChip() + r.kept_token[a] / tokens_per_chip;
      const int dest = mesh_.RankOfChip(mesh_.ChipHoldingExpert(chip, e));
      OPENMOE_CHECK_MSG(dest >= last_dest, "dispatch order is not rank order");
      last_dest = dest;
      ++counts[dest * num_experts + e];
    }
  }

  // 2. Counts first; from them, where each received row goes in the experts' view.
  std::vector<int64_t> recv_counts(world * num_experts);  // (ranks, E) rows from each source
  {
    ScopedMpiTime mpi(MpiDetail::kCounts);
    comm_->AllToAll(counts.data(), recv_counts.data(), num_experts);
  }
  PlanExchange(counts, recv_counts, r, s);
  int64_t received = 0;
  for (int q = 0; q < world; ++q) received += s.recv_rows[q];
  s.recv.ResizeUninitialized({received, d});
  ScratchArena* scratch = cache->Scratch();
  ScratchScope scope(scratch);
  float* expert_res = scratch->Take(received * d);

  if (chunks_ > 1) {
    // 3-5 pipelined: rows staged in chunk-major send order, out, experts, back, unstaged.
    const int64_t sent = r.NumKept();
    float* staged_out = scratch->Take(sent * d);
    float* staged_back = scratch->Take(sent * d);
    for (int64_t p = 0; p < sent; ++p)
      std::memcpy(staged_out + p * d, cache->dispatched.data() + s.send_order[p] * d, d * sizeof(float));
    CountRows(dims, s.send_rows);
    CountRows(dims, s.recv_rows);
    PipelinedExchange(
        dims, s, staged_out, s.recv.data(), expert_res, staged_back,
        [&](BlockRange range) {
          ExpertBlocksForward(dims, w, s.blocks, s.recv.data(), &cache->expert_ffn, expert_res,
                              scratch, range);
        },
        Phase::kDispatchForward, Phase::kExpertsForward, Phase::kCombineForward);
    for (int64_t p = 0; p < sent; ++p)
      std::memcpy(cache->expert_out.data() + s.send_order[p] * d, staged_back + p * d, d * sizeof(float));
    return;
  }

  // 3. Rows out, straight from dispatch order.
  Exchange(dims, cache->dispatched.data(), s.recv.data(), /*outbound=*/true, s);

  // 4. The local experts on every block they received.
  phase.Switch(Phase::kExpertsForward);
  ExpertBlocksForward(dims, w, s.blocks, s.recv.data(), &cache->expert_ffn, expert_res, scratch);

  // 5. Outputs back to their senders, straight into dispatch order.
  phase.Switch(Phase::kCombineForward);
  Exchange(dims, expert_res, cache->expert_out.data(), /*outbound=*/false, s);
}

void ExpertParallelRunner::Backward(int64_t layer, const MoeDims& dims, const MoeWeights& w,
                                    const MoeGrads& grads, MoeCache* cache,
                                    const float* d_expert_out, float* d_dispatched) {
  if (AllExpertsLocal()) {
    local_.Backward(layer, dims, w, grads, cache, d_expert_out, d_dispatched);
    return;
  }
  OPENMOE_CHECK_MSG(layer >= 0 && layer < static_cast<int64_t>(layers_.size()),
                    "Backward of MoE layer %ld without its Forward", static_cast<long>(layer));
  ScopedPhase phase(Phase::kCombineBackward);  // within the decoder's experts scope
  ExpertExchangeState& s = layers_[layer];
  const int64_t d = dims.d_model;
  const int64_t received = s.recv.dim(0);
  const int64_t sent = cache->routing.NumKept();
  ScratchArena* scratch = cache->Scratch();
  ScratchScope scope(scratch);
  float* d_out = scratch->Take(received * d);
  float* grad_in = scratch->Take(received * d);
  float* returned = scratch->Take(sent * d);
  if (chunks_ > 1) {
    // Pipelined as the forward: d outputs out chunk by chunk, expert backward per chunk, d inputs
    // back; staged in send order, added into dispatch order.
    float* staged_out = scratch->Take(sent * d);
    for (int64_t p = 0; p < sent; ++p)
      std::memcpy(staged_out + p * d, d_expert_out + s.send_order[p] * d, d * sizeof(float));
    std::fill_n(grad_in, received * d, 0.0f);
    CountRows(dims, s.send_rows);
    CountRows(dims, s.recv_rows);
    PipelinedExchange(
        dims, s, staged_out, d_out, grad_in, returned,
        [&](BlockRange range) {
          ExpertBlocksBackward(dims, w, grads, s.blocks, s.recv.data(), cache->expert_ffn, d_out,
                               grad_in, scratch, range);
        },
        Phase::kCombineBackward, Phase::kExpertsBackward, Phase::kDispatchBackward);
    for (int64_t p = 0; p < sent; ++p)
      AddInPlace(d_dispatched + s.send_order[p] * d, returned + p * d, d);
    return;
  }
  // d outputs travel to the experts, mirroring the combine.
  Exchange(dims, d_expert_out, d_out, /*outbound=*/true, s);
  phase.Switch(Phase::kExpertsBackward);
  // Expert backward, block by block, into zeroed input gradients.
  std::fill_n(grad_in, received * d, 0.0f);
  ExpertBlocksBackward(dims, w, grads, s.blocks, s.recv.data(), cache->expert_ffn, d_out, grad_in,
                       scratch);
  phase.Switch(Phase::kDispatchBackward);
  // d inputs travel back, mirroring the dispatch, and add into dispatch order.
  Exchange(dims, grad_in, returned, /*outbound=*/false, s);
  AddInPlace(d_dispatched, returned, sent * d);
}

}  // namespace openmoe
