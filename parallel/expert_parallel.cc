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

}  // namespace

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
  counters_.exchanges += 1;
  for (int q = 0; q < comm_->size(); ++q) {
    if (q == comm_->rank()) {
      counters_.rows_local += send_rows[q];
    } else {
      counters_.rows_remote += send_rows[q];
      counters_.bytes_remote += send_rows[q] * d * (bf16 ? 2 : 4);
    }
  }
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
  s.send_rows.assign(world, 0);
  for (int q = 0; q < world; ++q)
    for (int64_t e = 0; e < num_experts; ++e) s.send_rows[q] += counts[q * num_experts + e];

  // 2. Counts first; from them, where each received row goes in the experts' (expert-major) view.
  std::vector<int64_t> recv_counts(world * num_experts);  // (ranks, E) rows from each source
  {
    ScopedMpiTime mpi(MpiDetail::kCounts);
    comm_->AllToAll(counts.data(), recv_counts.data(), num_experts);
  }
  // Received rows arrive source-major, then by expert: each (source, expert) run is a block
  // that its expert processes where it lies, so no row is reordered.
  const int64_t first = mesh_.first_local_expert, local = mesh_.num_local_experts;
  s.recv_rows.assign(world, 0);
  s.blocks.clear();
  int64_t received = 0;
  for (int q = 0; q < world; ++q) {
    for (int64_t e = 0; e < num_experts; ++e) {
      const int64_t n = recv_counts[q * num_experts + e];
      if (n == 0) continue;
      OPENMOE_CHECK_MSG(e >= first && e < first + local,
                        "rows for expert %ld reached rank %d, which does not hold it",
                        static_cast<long>(e), comm_->rank());
      s.recv_rows[q] += n;
      s.blocks.push_back({.begin = received, .rows = n, .local_expert = e - first});
      received += n;
    }
  }

  // 3. Rows out, straight from dispatch order.
  s.recv.ResizeUninitialized({received, d});
  Exchange(dims, cache->dispatched.data(), s.recv.data(), /*outbound=*/true, s);

  // 4. The local experts on every block they received.
  phase.Switch(Phase::kExpertsForward);
  ScratchScope scope(cache->Scratch());
  float* expert_res = cache->Scratch()->Take(received * d);
  ExpertBlocksForward(dims, w, s.blocks, s.recv.data(), &cache->expert_ffn, expert_res,
                      cache->Scratch());

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
