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

// The part holding row u of n (u < n): the k with k n / chunks <= u < (k + 1) n / chunks, i.e.
// k n < (u + 1) chunks <= (k + 1) n.
int64_t ChunkOf(int64_t u, int64_t n, int64_t chunks) { return ((u + 1) * chunks - 1) / n; }

// Rows of chunks before k, over every rank.
int64_t RowsBefore(const std::vector<std::vector<int64_t>>& rows, int64_t k) {
  int64_t n = 0;
  for (int64_t j = 0; j < k; ++j)
    for (int64_t r : rows[j]) n += r;
  return n;
}

// Per rank, the rows of every chunk.
std::vector<int64_t> PerRank(const std::vector<std::vector<int64_t>>& rows) {
  std::vector<int64_t> out(rows.empty() ? 0 : rows[0].size(), 0);
  for (const auto& chunk : rows)
    for (size_t q = 0; q < chunk.size(); ++q) out[q] += chunk[q];
  return out;
}

// One all-to-all-v of rows on the progress thread; kBf16 packs and unpacks there too.
class RowExchangeTask final : public AsyncTask {
 public:
  RowExchangeTask(Communicator* comm, const float* send, std::vector<int64_t> send_counts,
                  float* recv, std::vector<int64_t> recv_counts, bool bf16)
      : comm_(comm),
        send_(send),
        recv_(recv),
        send_counts_(std::move(send_counts)),
        recv_counts_(std::move(recv_counts)),
        bf16_(bf16) {}

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

void ExpertParallelRunner::Exchange(const MoeDims& dims, const float* send,
                                    const std::vector<int64_t>& send_rows, float* recv,
                                    const std::vector<int64_t>& recv_rows) {
  CommThread::UrgentScope urgent(thread_);  // gradient buckets wait (parallel/comm_thread.h)
  ScopedMpiTime mpi(MpiDetail::kRows);  // the whole exchange (with bf16 packing, if on)
  const int64_t d = dims.d_model;
  if (dims.precision != GemmPrecision::kBf16) {
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

std::vector<int32_t> ExpertParallelRunner::PlanSend(const std::vector<int64_t>& counts,
                                                    const Routing& routing, int64_t tokens,
                                                    ExpertExchangeState& s) const {
  const int world = comm_->size();
  const int64_t num_experts = static_cast<int64_t>(counts.size()) / world;
  const int64_t kept = routing.NumKept();
  // Dispatch order is destination-major (Forward checks it): number each destination's token
  // rows by first appearance, and remember the dispatch row each is first seen in. Rows for this
  // rank skip the wire (the receiver copies them straight from dispatch order), so there each
  // assignment is numbered by its position.
  const int me = comm_->rank();
  std::vector<int32_t> map(kept);
  std::vector<int64_t> dest_of(kept);
  std::vector<std::vector<int64_t>> first_row(world);  // (ranks)(its token rows)
  std::vector<int64_t> seen_by(tokens, -1);
  std::vector<int32_t> seen_as(tokens);
  s.send_rows.assign(world, 0);
  int64_t a = 0;
  for (int q = 0; q < world; ++q) {
    for (int64_t e = 0; e < num_experts; ++e) {
      for (int64_t i = 0; i < counts[q * num_experts + e]; ++i, ++a) {
        const int64_t t = routing.kept_token[a];
        OPENMOE_CHECK(t >= 0 && t < tokens);
        dest_of[a] = q;
        if (q == me) {
          map[a] = static_cast<int32_t>(s.send_rows[me] + i);
          continue;
        }
        if (seen_by[t] != q) {
          seen_by[t] = q;
          seen_as[t] = static_cast<int32_t>(first_row[q].size());
          first_row[q].push_back(a);
        }
        map[a] = seen_as[t];
      }
      s.send_rows[q] += counts[q * num_experts + e];
    }
  }
  OPENMOE_CHECK(a == kept);
  // An assignment travels in its token row's chunk (to this rank: by its position).
  s.tokens.sent.assign(chunks_, std::vector<int64_t>(world, 0));
  s.assigned.sent.assign(chunks_, std::vector<int64_t>(world, 0));
  s.token_source.clear();
  for (int64_t k = 0; k < chunks_; ++k) {
    for (int q = 0; q < world; ++q) {
      const int64_t n = static_cast<int64_t>(first_row[q].size());
      for (int64_t u = ChunkStart(k, n, chunks_); u < ChunkStart(k + 1, n, chunks_); ++u)
        s.token_source.push_back(first_row[q][u]);
      s.tokens.sent[k][q] = ChunkStart(k + 1, n, chunks_) - ChunkStart(k, n, chunks_);
    }
  }
  std::vector<int64_t> chunk_of(kept);
  for (int64_t b = 0; b < kept; ++b) {
    const int q = static_cast<int>(dest_of[b]);
    const int64_t rows = q == me ? s.send_rows[me] : static_cast<int64_t>(first_row[q].size());
    chunk_of[b] = ChunkOf(map[b], rows, chunks_);
    ++s.assigned.sent[chunk_of[b]][q];
  }
  s.send_order.clear();
  if (chunks_ > 1) {
    for (int64_t k = 0; k < chunks_; ++k)
      for (int64_t b = 0; b < kept; ++b)
        if (chunk_of[b] == k) s.send_order.push_back(b);
  }
  return map;
}

void ExpertParallelRunner::PlanReceive(const std::vector<int64_t>& recv_counts,
                                       const std::vector<int32_t>& maps,
                                       ExpertExchangeState& s) const {
  const int world = comm_->size();
  const int64_t num_experts = static_cast<int64_t>(recv_counts.size()) / world;
  const int64_t first = mesh_.first_local_expert, local = mesh_.num_local_experts;
  // Where each (source, expert) run's map entries start (source-major, then expert, as sent),
  // and how many rows each source numbered (its map numbers them densely from 0: token rows, or
  // for this rank its assignments, whose rows are this rank's own dispatch rows from self_start).
  const int me = comm_->rank();
  std::vector<int64_t> run_at(world * num_experts + 1, 0);
  for (int64_t i = 0; i < world * num_experts; ++i) run_at[i + 1] = run_at[i] + recv_counts[i];
  OPENMOE_CHECK(run_at.back() == static_cast<int64_t>(maps.size()));
  std::vector<int64_t> numbered(world, 0);
  for (int q = 0; q < world; ++q) {
    for (int64_t i = run_at[q * num_experts]; i < run_at[(q + 1) * num_experts]; ++i)
      numbered[q] = std::max<int64_t>(numbered[q], maps[i] + 1);
  }
  int64_t self_start = 0;
  for (int q = 0; q < me; ++q) self_start += s.send_rows[q];
  s.recv_rows.assign(world, 0);
  s.assigned.received.assign(chunks_, std::vector<int64_t>(world, 0));
  s.tokens.received.assign(chunks_, std::vector<int64_t>(world, 0));
  s.chunk_blocks.assign(1, 0);
  s.blocks.clear();
  s.token_of_row.clear();
  // Received rows lie chunk-major, then source-major, then by expert in the sender's order: each
  // (chunk, source, expert) run is a block that its expert processes where it lies. Token rows
  // arrive chunk-major, then source-major.
  int64_t received = 0, token_base = 0;
  for (int64_t k = 0; k < chunks_; ++k) {
    for (int q = 0; q < world; ++q) {
      const int64_t chunk_first = ChunkStart(k, numbered[q], chunks_);
      for (int64_t e = 0; e < num_experts; ++e) {
        int64_t n = 0;
        for (int64_t i = run_at[q * num_experts + e]; i < run_at[q * num_experts + e + 1]; ++i) {
          if (ChunkOf(maps[i], numbered[q], chunks_) != k) continue;
          s.token_of_row.push_back(q == me ? -1 - (self_start + maps[i])
                                           : token_base + maps[i] - chunk_first);
          ++n;
        }
        if (n == 0) continue;
        OPENMOE_CHECK_MSG(e >= first && e < first + local,
                          "rows for expert %ld reached rank %d, which does not hold it",
                          static_cast<long>(e), comm_->rank());
        s.recv_rows[q] += n;
        s.assigned.received[k][q] += n;
        s.blocks.push_back({.begin = received, .rows = n, .local_expert = e - first});
        received += n;
      }
      if (q != me) s.tokens.received[k][q] = ChunkStart(k + 1, numbered[q], chunks_) - chunk_first;
      token_base += s.tokens.received[k][q];
    }
    s.chunk_blocks.push_back(s.blocks.size());
  }
}

void ExpertParallelRunner::ExchangeAround(const MoeDims& dims, const ChunkRows& out,
                                          const ChunkRows& back, const float* out_send,
                                          float* out_recv, const float* back_send, float* back_recv,
                                          const std::function<void(int64_t chunk)>& compute,
                                          Phase out_phase, Phase compute_phase, Phase back_phase) {
  const int64_t d = dims.d_model;
  const bool bf16 = dims.precision == GemmPrecision::kBf16;
  const bool pipelined = rows_comm_ != nullptr;
  CountRows(dims, PerRank(out.sent));
  CountRows(dims, PerRank(back.received));
  // Chunk k's rows: out of out_send, into out_recv, out of back_send, into back_recv.
  auto out_task = [&](int64_t k) {
    return std::make_unique<RowExchangeTask>(
        rows_comm_.get(), out_send + RowsBefore(out.sent, k) * d, Scaled(out.sent[k], d),
        out_recv + RowsBefore(out.received, k) * d, Scaled(out.received[k], d), bf16);
  };
  auto back_task = [&](int64_t k) {
    return std::make_unique<RowExchangeTask>(
        rows_comm_.get(), back_send + RowsBefore(back.received, k) * d, Scaled(back.received[k], d),
        back_recv + RowsBefore(back.sent, k) * d, Scaled(back.sent[k], d), bf16);
  };
  std::vector<std::unique_ptr<RowExchangeTask>> outs(chunks_), backs(chunks_);
  if (pipelined) {
    outs[0] = out_task(0);
    thread_->Submit(outs[0].get());
  }
  for (int64_t k = 0; k < chunks_; ++k) {
    if (pipelined && k + 1 < chunks_) {  // in flight while chunk k computes
      outs[k + 1] = out_task(k + 1);
      thread_->Submit(outs[k + 1].get());
    }
    {
      ScopedPhase phase(out_phase);
      if (pipelined) {
        ScopedMpiTime mpi(MpiDetail::kRows);
        thread_->Wait(outs[k].get());
      } else {
        Exchange(dims, out_send + RowsBefore(out.sent, k) * d, out.sent[k],
                 out_recv + RowsBefore(out.received, k) * d, out.received[k]);
      }
    }
    {
      ScopedPhase phase(compute_phase);
      compute(k);
    }
    if (pipelined) {
      backs[k] = back_task(k);
      thread_->Submit(backs[k].get());
    } else {
      ScopedPhase phase(back_phase);
      Exchange(dims, back_send + RowsBefore(back.received, k) * d, back.received[k],
               back_recv + RowsBefore(back.sent, k) * d, back.sent[k]);
    }
  }
  if (!pipelined) return;
  ScopedPhase phase(back_phase);
  ScopedMpiTime mpi(MpiDetail::kRows);
  for (auto& task : backs) thread_->Wait(task.get());
}

int64_t ExpertParallelRunner::held_bytes() const {
  int64_t bytes =
      static_cast<int64_t>((wire_send_.capacity() + wire_recv_.capacity()) * sizeof(uint16_t));
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

  // 1. Assignments per (destination rank, expert). Here every local chip is in one expert group,
  //    so the destination rank grows with the expert id: dispatch order is destination-major.
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

  // 2. Counts, then each assignment's token row (int32s, as pairs of 16-bit words); from them,
  //    where each received row goes in the experts' view.
  std::vector<int64_t> recv_counts(world * num_experts);  // (ranks, E) rows from each source
  {
    CommThread::UrgentScope urgent(thread_);
    ScopedMpiTime mpi(MpiDetail::kCounts);
    comm_->AllToAll(counts.data(), recv_counts.data(), num_experts);
  }
  const std::vector<int32_t> map = PlanSend(counts, r, dims.tokens, s);
  std::vector<int64_t> map_recv_words(world, 0);
  int64_t maps_received = 0;
  for (int q = 0; q < world; ++q) {
    for (int64_t e = 0; e < num_experts; ++e)
      map_recv_words[q] += 2 * recv_counts[q * num_experts + e];
    maps_received += map_recv_words[q] / 2;
  }
  std::vector<int32_t> maps(maps_received);
  {
    CommThread::UrgentScope urgent(thread_);
    ScopedMpiTime mpi(MpiDetail::kCounts);
    comm_->AllToAllV(reinterpret_cast<const uint16_t*>(map.data()), Scaled(s.send_rows, 2),
                     reinterpret_cast<uint16_t*>(maps.data()), map_recv_words);
  }
  for (int q = 0; q < world; ++q)
    if (q != comm_->rank()) counters_.index_bytes_remote += s.send_rows[q] * 4;
  PlanReceive(recv_counts, maps, s);
  const int64_t received = static_cast<int64_t>(s.token_of_row.size());
  s.recv.ResizeUninitialized({received, d});
  ScratchArena* scratch = cache->Scratch();
  ScratchScope scope(scratch);
  float* expert_res = scratch->Take(received * d);

  // 3-5: token rows out, copied into every block that reads them, the experts, outputs back per
  // assignment (chunked: staged in chunk-major send order).
  const int64_t tokens_sent = static_cast<int64_t>(s.token_source.size());
  float* token_rows_out = scratch->Take(tokens_sent * d);
  float* token_rows_in = scratch->Take(RowsBefore(s.tokens.received, chunks_) * d);
  for (int64_t u = 0; u < tokens_sent; ++u)
    cache->DispatchedRow(s.token_source[u], d, token_rows_out + u * d);
  counters_.rows_local += s.send_rows[comm_->rank()];  // copied from dispatch order below
  const bool staged = !s.send_order.empty();
  const int64_t kept = r.NumKept();
  float* outputs = staged ? scratch->Take(kept * d) : cache->expert_out.data();
  ExchangeAround(
      dims, s.tokens, s.assigned, token_rows_out, token_rows_in, expert_res, outputs,
      [&](int64_t k) {
        {
          ScopedPhase copy(Phase::kDispatchForward);
          for (int64_t i = RowsBefore(s.assigned.received, k);
               i < RowsBefore(s.assigned.received, k + 1); ++i) {
            const int64_t t = s.token_of_row[i];
            if (t >= 0) {
              std::memcpy(s.recv.data() + i * d, token_rows_in + t * d, d * sizeof(float));
            } else {
              cache->DispatchedRow(-1 - t, d, s.recv.data() + i * d);
            }
          }
        }
        ExpertBlocksForward(dims, w, s.blocks, s.recv.data(), &cache->expert_ffn, expert_res,
                            scratch, {s.chunk_blocks[k], s.chunk_blocks[k + 1]});
      },
      Phase::kDispatchForward, Phase::kExpertsForward, Phase::kCombineForward);
  if (staged) {
    for (int64_t p = 0; p < kept; ++p)
      std::memcpy(cache->expert_out.data() + s.send_order[p] * d, outputs + p * d,
                  d * sizeof(float));
  }
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
  const int64_t kept = cache->routing.NumKept();
  // FP32: a token row's d inputs return summed; BF16: per assignment (see the header).
  const bool summed = dims.precision != GemmPrecision::kBf16;
  const ChunkRows& back = summed ? s.tokens : s.assigned;
  if (summed)
    counters_.rows_local += s.recv_rows[comm_->rank()];  // added straight into d_dispatched
  ScratchArena* scratch = cache->Scratch();
  ScratchScope scope(scratch);
  float* d_out = scratch->Take(received * d);
  float* grad_in = scratch->Take(received * d);
  std::fill_n(grad_in, received * d, 0.0f);
  float* grad_back = summed ? scratch->Take(RowsBefore(s.tokens.received, chunks_) * d) : grad_in;
  float* returned = scratch->Take(RowsBefore(back.sent, chunks_) * d);
  // d outputs out per assignment (chunked: staged in send order), the expert backward, d inputs
  // back.
  const bool staged = !s.send_order.empty();
  const float* d_out_send = d_expert_out;
  if (staged) {
    float* staged_out = scratch->Take(kept * d);
    for (int64_t p = 0; p < kept; ++p)
      std::memcpy(staged_out + p * d, d_expert_out + s.send_order[p] * d, d * sizeof(float));
    d_out_send = staged_out;
  }
  ExchangeAround(
      dims, s.assigned, back, d_out_send, d_out, grad_back, returned,
      [&](int64_t k) {
        ExpertBlocksBackward(dims, w, grads, s.blocks, s.recv.data(), cache->expert_ffn, d_out,
                             grad_in, scratch, {s.chunk_blocks[k], s.chunk_blocks[k + 1]});
        if (!summed) return;
        ScopedPhase sum(Phase::kDispatchBackward);
        const int64_t first_token = RowsBefore(s.tokens.received, k);
        std::fill(grad_back + first_token * d, grad_back + RowsBefore(s.tokens.received, k + 1) * d,
                  0.0f);
        for (int64_t i = RowsBefore(s.assigned.received, k);
             i < RowsBefore(s.assigned.received, k + 1); ++i) {
          const int64_t t = s.token_of_row[i];
          AddInPlace(t >= 0 ? grad_back + t * d : d_dispatched + (-1 - t) * d, grad_in + i * d, d);
        }
      },
      Phase::kCombineBackward, Phase::kExpertsBackward, Phase::kDispatchBackward);
  // Into dispatch order: a token row's sum into the row it was sent from (the sender's dx adds
  // every row of a token), or each assignment into its own.
  if (summed) {
    for (size_t u = 0; u < s.token_source.size(); ++u)
      AddInPlace(d_dispatched + s.token_source[u] * d, returned + u * d, d);
  } else if (staged) {
    for (int64_t p = 0; p < kept; ++p)
      AddInPlace(d_dispatched + s.send_order[p] * d, returned + p * d, d);
  } else {
    AddInPlace(d_dispatched, returned, kept * d);
  }
}

}  // namespace openmoe
