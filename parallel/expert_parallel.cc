#include "parallel/expert_parallel.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/kernels.h"

namespace openmoe {

namespace {

// Rows (R, d): dst[i] = src[index[i]].
void GatherRows(const float* src, const std::vector<int64_t>& index, int64_t d, float* dst) {
  for (size_t i = 0; i < index.size(); ++i) std::memcpy(dst + i * d, src + index[i] * d, d * sizeof(float));
}

// Rows (R, d): dst[index[i]] = src[i].
void ScatterRows(const float* src, const std::vector<int64_t>& index, int64_t d, float* dst) {
  for (size_t i = 0; i < index.size(); ++i) std::memcpy(dst + index[i] * d, src + i * d, d * sizeof(float));
}

std::vector<int64_t> Scaled(const std::vector<int64_t>& rows, int64_t d) {
  std::vector<int64_t> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) out[i] = rows[i] * d;
  return out;
}

}  // namespace

void ExpertParallelRunner::ScatterToExperts(int64_t d, ExpertExchangeState& s, float* expert_major) {
  s.recv.ResizeUninitialized({static_cast<int64_t>(s.recv_to_expert.size()), d});
  comm_->AllToAllV(s.send.data(), Scaled(s.send_rows, d), s.recv.data(), Scaled(s.recv_rows, d));
  ScatterRows(s.recv.data(), s.recv_to_expert, d, expert_major);
}

void ExpertParallelRunner::GatherFromExperts(int64_t d, ExpertExchangeState& s,
                                             const float* expert_major, float* back) {
  GatherRows(expert_major, s.recv_to_expert, d, s.recv.data());
  comm_->AllToAllV(s.recv.data(), Scaled(s.recv_rows, d), back, Scaled(s.send_rows, d));
}

void ExpertParallelRunner::Forward(const MoeDims& dims, const MoeWeights& w, MoeCache* cache) {
  const Routing& r = cache->routing;
  ExpertExchangeState& s = cache->exchange;
  const int64_t d = dims.d_model, num_experts = dims.num_experts;
  const int world = comm_->size();
  OPENMOE_CHECK(dims.tokens % mesh_.chips_per_rank == 0);
  const int64_t tokens_per_chip = dims.tokens / mesh_.chips_per_rank;

  // 1. Destination rank of every kept assignment; bucket by (rank, expert), stable.
  std::vector<int64_t> counts(world * num_experts, 0);  // (ranks, E) rows to send
  std::vector<int> dest(r.NumKept());
  for (int64_t e = 0; e < num_experts; ++e) {
    for (int64_t a = r.expert_offsets[e]; a < r.expert_offsets[e + 1]; ++a) {
      const int64_t chip = mesh_.FirstChip() + r.kept_token[a] / tokens_per_chip;
      dest[a] = mesh_.RankOfChip(mesh_.ChipHoldingExpert(chip, e));
      ++counts[dest[a] * num_experts + e];
    }
  }
  std::vector<int64_t> cursor(world * num_experts, 0);
  int64_t total = 0;
  s.send_rows.assign(world, 0);
  for (int q = 0; q < world; ++q) {
    for (int64_t e = 0; e < num_experts; ++e) {
      cursor[q * num_experts + e] = total;
      total += counts[q * num_experts + e];
      s.send_rows[q] += counts[q * num_experts + e];
    }
  }
  s.send_order.assign(r.NumKept(), 0);
  for (int64_t e = 0; e < num_experts; ++e)
    for (int64_t a = r.expert_offsets[e]; a < r.expert_offsets[e + 1]; ++a)
      s.send_order[cursor[dest[a] * num_experts + e]++] = a;

  // 2. Counts first, then rows.
  std::vector<int64_t> recv_counts(world * num_experts);  // (ranks, E) rows from each source
  comm_->AllToAll(counts.data(), recv_counts.data(), num_experts);
  s.recv_rows.assign(world, 0);
  const int64_t first = mesh_.first_local_expert, local = mesh_.num_local_experts;
  s.local_offsets.assign(local + 1, 0);
  for (int q = 0; q < world; ++q) {
    for (int64_t e = 0; e < num_experts; ++e) {
      const int64_t n = recv_counts[q * num_experts + e];
      s.recv_rows[q] += n;
      if (n > 0) OPENMOE_CHECK_MSG(e >= first && e < first + local, "rows for expert %ld reached rank %d, which does not hold it", static_cast<long>(e), comm_->rank());
      if (n > 0) s.local_offsets[e - first + 1] += n;
    }
  }
  for (int64_t le = 0; le < local; ++le) s.local_offsets[le + 1] += s.local_offsets[le];
  // Received rows arrive source-major then expert; the experts want them expert-major.
  int64_t received = s.local_offsets[local];
  s.recv_to_expert.assign(received, 0);
  {
    std::vector<int64_t> next(s.local_offsets.begin(), s.local_offsets.end() - 1);
    int64_t i = 0;
    for (int q = 0; q < world; ++q)
      for (int64_t e = first; e < first + local; ++e)
        for (int64_t n = 0; n < recv_counts[q * num_experts + e]; ++n) s.recv_to_expert[i++] = next[e - first]++;
  }
  counters_.calls += 1;
  for (int q = 0; q < world; ++q)
    (q == comm_->rank() ? counters_.rows_sent_local : counters_.rows_sent_remote) += s.send_rows[q];

  s.send.ResizeUninitialized({r.NumKept(), d});
  GatherRows(cache->dispatched.data(), s.send_order, d, s.send.data());
  s.expert_in.ResizeUninitialized({received, d});
  ScatterToExperts(d, s, s.expert_in.data());

  // 3. Local experts on everything they received.
  s.expert_res.ResizeUninitialized({received, d});
  cache->expert_ffn.resize(local);
  for (int64_t le = 0; le < local; ++le) {
    const int64_t begin = s.local_offsets[le], count = s.local_offsets[le + 1] - begin;
    FfnForward(ExpertFfnDims(dims, count), ExpertFfnWeights(dims, w, le),
               s.expert_in.data() + begin * d, &cache->expert_ffn[le],
               s.expert_res.data() + begin * d);
  }

  // 4. Outputs back, into dispatch order.
  GatherFromExperts(d, s, s.expert_res.data(), s.send.data());
  ScatterRows(s.send.data(), s.send_order, d, cache->expert_out.data());
}

void ExpertParallelRunner::Backward(const MoeDims& dims, const MoeWeights& w,
                                    const MoeGrads& grads, MoeCache* cache,
                                    const float* d_expert_out, float* d_dispatched) {
  ExpertExchangeState& s = cache->exchange;
  const int64_t d = dims.d_model, local = mesh_.num_local_experts;
  const int64_t received = s.local_offsets[local];
  // d outputs travel to the experts (reusing the forward's buffers and plan).
  GatherRows(d_expert_out, s.send_order, d, s.send.data());
  s.expert_res.ResizeUninitialized({received, d});
  ScatterToExperts(d, s, s.expert_res.data());
  // Expert backward; the input gradients overwrite a zeroed buffer.
  Tensor d_in({received, d});
  for (int64_t le = 0; le < local; ++le) {
    const int64_t begin = s.local_offsets[le], count = s.local_offsets[le + 1] - begin;
    FfnBackward(ExpertFfnDims(dims, count), ExpertFfnWeights(dims, w, le),
                s.expert_in.data() + begin * d, &cache->expert_ffn[le],
                s.expert_res.data() + begin * d, ExpertFfnGrads(dims, grads, le),
                d_in.data() + begin * d);
  }
  // d inputs travel back and add into dispatch order.
  GatherFromExperts(d, s, d_in.data(), s.send.data());
  for (size_t i = 0; i < s.send_order.size(); ++i)
    AddInPlace(d_dispatched + s.send_order[i] * d, s.send.data() + i * d, d);
}

}  // namespace openmoe
