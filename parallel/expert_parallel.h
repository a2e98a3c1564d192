// Expert parallelism: the MoE experts run on the ranks that hold them, reached by all-to-all.
//
// A rank that hosts whole expert groups (chips per rank >= expert_parallel) holds every expert
// and keeps its tokens: it runs them in place, with no communication. Otherwise all its chips
// lie in one expert group, and the forward (collective over `comm`, every rank calls it once per
// MoE layer, in layer order) is:
//   1. each kept assignment (token t of chip c, expert e) goes to the chip of c's expert group
//      that holds e, hence to that chip's rank; rows are bucketed by (destination rank, expert);
//   2. counts travel first (one all-to-all of E counts per rank pair), then the rows
//      (an all-to-all-v aggregated per rank pair, so no padding to capacity is sent; pairs on one
//      rank are copies);
//   3. each local expert runs on the rows it received, block by block as they arrived (one GEMM
//      chain per source rank; reordering them into one block would cost two more row copies);
//   4. outputs return by the mirrored all-to-all-v into dispatch order.
// Backward mirrors it: d outputs travel out, expert backward, d inputs travel back. Expert weight
// gradients accumulate here only for local experts; the trainer reduces them over replicas.
// Empty messages (an expert or a rank with no tokens) are legal everywhere.
//
// BF16 (dims.precision kBf16): all four exchanges carry bf16 rows, half the bytes, as a TPU run
// sends its bf16 activations. Numerically free or layout-neutral: the expert inputs (forward) and
// output gradients (backward) only feed bf16 GEMMs, which round them anyway; the expert outputs and
// input gradients are rounded by ExpertBlocksForward / Backward in every layout, one process
// included, so the wire's rounding is exact. (The gradient reduction has its own wire option,
// train.grad_reduce_dtype: parallel/grad_reducer.h.)
//
// Pipelining (chunks > 1, train.expert_exchange_chunks): each (source rank, expert) run of rows is
// cut into `chunks` parts along its rows (the capacity dimension: part k holds rows
// [k n / chunks, (k + 1) n / chunks) of a run of n), and chunk k of every run travels in one
// all-to-all-v. Chunk k + 1's rows are in flight (driven by the CommThread) while the experts
// compute chunk k, and chunk k's outputs start back as soon as they are computed; the backward
// does the same with the gradients. Received rows lie chunk-major (then source, then expert), so
// a chunk's blocks are contiguous; the sender stages its rows in that order (one copy each way).
// Every row meets the same expert arithmetic as unchunked; only the weight gradients' sums over
// rows are cut differently (fp32 rounding). Empty chunks (a run shorter than `chunks`) are fine.
//
// The runner owns its exchange state, one per MoE layer (keyed by the `layer` its caller passes,
// the decoder's layer index), from a layer's Forward to its Backward; the experts' activations
// stay in the layer's MoeCache, and the temporaries (the experts' outputs and the backward's
// gradients, (R, d) and (A, d)) come from the cache's scratch arena. The experts run through ExpertBlocksForward / Backward
// (model/expert_ffn.h), the same loop as on one process.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/phase_timer.h"
#include "core/tensor.h"
#include "model/expert_ffn.h"
#include "model/moe.h"
#include "parallel/comm_thread.h"
#include "parallel/communicator.h"
#include "parallel/mesh.h"

namespace openmoe {

// Rows moved by the all-to-all-v's (dispatch and combine, forward and backward: four per MoE
// layer call), summed since construction; each row is d_model floats.
struct ExchangeCounters {
  int64_t exchanges = 0;
  int64_t rows_remote = 0;  // rows sent to other ranks
  int64_t rows_local = 0;   // rows sent to this rank (copies)
  int64_t bytes_remote = 0;  // payload bytes of rows_remote: d_model x 4 (fp32) or x 2 (bf16)
};

// What the exchange of one MoE layer keeps between its forward and backward.
struct ExpertExchangeState {
  std::vector<int64_t> send_rows;   // (ranks) rows sent to each rank, in dispatch order
  std::vector<int64_t> recv_rows;   // (ranks) rows received from each rank
  std::vector<ExpertBlock> blocks;  // runs of received rows, one per (chunk, source rank, local
                                    // expert): receive order, chunk-major, source, then expert
  Tensor recv;  // (R, d) received rows: the local experts' inputs
  // Per chunk (one chunk: the whole exchange): rows to and from each rank, (chunks)(ranks), and
  // chunk k's blocks [chunk_blocks[k], chunk_blocks[k + 1]).
  std::vector<std::vector<int64_t>> chunk_send_rows, chunk_recv_rows;
  std::vector<size_t> chunk_blocks;
  // Chunked: the dispatch row sent at each position of the chunk-major send order (A); empty with
  // one chunk (dispatch order is send order).
  std::vector<int64_t> send_order;
};

class ExpertParallelRunner final : public ExpertRunner {
 public:
  // comm: the ranks of the mesh (world). Both must outlive the runner. chunks > 1 pipelines the
  // exchange with the experts (above) on `thread` (required then, and outliving the runner), over
  // a duplicate of comm made here: collective over comm.
  ExpertParallelRunner(const Mesh& mesh, Communicator* comm, int64_t chunks = 1,
                       CommThread* thread = nullptr);

  // dims.tokens is this rank's token count: its chips' rows, chip-major, for this microbatch.
  // layer >= 0: the MoE layer's key (see ExpertRunner).
  void Forward(int64_t layer, const MoeDims& dims, const MoeWeights& w, MoeCache* cache) override;
  void Backward(int64_t layer, const MoeDims& dims, const MoeWeights& w, const MoeGrads& grads,
                MoeCache* cache, const float* d_expert_out, float* d_dispatched) override;

  const ExchangeCounters& counters() const { return counters_; }
  // The exchange of `layer`'s last Forward; null before any (or when every expert is local).
  const ExpertExchangeState* exchange_state(int64_t layer) const;
  // Bytes the runner holds between calls: every layer's received rows and the bf16 wire buffers.
  int64_t held_bytes() const;

 private:
  bool AllExpertsLocal() const;
  // From the (ranks, E) counts sent and received: the state's per-rank and per-chunk rows, the
  // blocks and, chunked, the send order.
  void PlanExchange(const std::vector<int64_t>& counts, const std::vector<int64_t>& recv_counts,
                    const Routing& routing, ExpertExchangeState& s) const;
  void CountRows(const MoeDims& dims, const std::vector<int64_t>& send_rows);
  // One all-to-all-v of rows: outbound sends state.send_rows[q] rows to rank q (dispatch order)
  // and receives state.recv_rows (source-major); the return direction swaps the counts. kBf16:
  // the rows travel as bf16 (recv gets them back as floats).
  void Exchange(const MoeDims& dims, const float* send, float* recv, bool outbound,
                ExpertExchangeState& state);
  // Chunked: sends out_send (A, d, chunk-major send order) to out_recv (R, d), runs `compute` on
  // each chunk's blocks as it arrives (it writes back_send's rows of them), and returns them into
  // back_recv (A, d, send order), chunk by chunk. The phases: waiting for rows out, computing,
  // waiting for rows back.
  void PipelinedExchange(const MoeDims& dims, const ExpertExchangeState& s, const float* out_send,
                         float* out_recv, const float* back_send, float* back_recv,
                         const std::function<void(BlockRange)>& compute, Phase out_phase,
                         Phase compute_phase, Phase back_phase);

  const Mesh& mesh_;
  Communicator* comm_;
  const int64_t chunks_;
  CommThread* thread_;
  std::unique_ptr<Communicator> rows_comm_;  // chunked: the row all-to-alls, on thread_
  LocalExpertRunner local_;
  ExchangeCounters counters_;
  std::vector<ExpertExchangeState> layers_;  // (max layer + 1) indexed by layer
  // BF16: rows as they travel, d bf16 values each (Communicator's 16-bit all-to-all), shared by
  // every exchange.
  std::vector<uint16_t> wire_send_, wire_recv_;
};

}  // namespace openmoe
