// Expert parallelism: the MoE experts run on the ranks that hold them, reached by all-to-all.
//
// A rank that hosts whole expert groups (chips per rank >= expert_parallel) holds every expert
// and keeps its tokens: it runs them in place, with no communication. Otherwise all its chips
// lie in one expert group, and the forward (collective over `comm`, every rank calls it once per
// MoE layer, in layer order) is:
//   1. each kept assignment (token t of chip c, expert e) goes to the chip of c's expert group
//      that holds e, hence to that chip's rank; assignments are counted per (destination rank,
//      expert);
//   2. counts travel first (one all-to-all of E counts per rank pair), then the token-row map:
//      per assignment, which of the rows sent to its rank it reads (one int32 each);
//   3. deduplicated dispatch: each token travels once per destination rank, however many of
//      that rank's experts it chose (a token row), in one all-to-all-v aggregated per rank
//      pair, so no padding to capacity is sent; rows for this rank skip the wire (each
//      assignment's row is copied once, straight from dispatch order into its block). The receiver
//      copies each token row into every (source rank, local expert) block that reads it, which
//      rebuilds exactly the per-assignment rows, blocks and order of a per-assignment exchange:
//      the experts' arithmetic does not change;
//   4. each local expert runs on its rows, block by block as they lie (one GEMM chain per source
//      rank; reordering them into one block would cost two more row copies);
//   5. outputs return per assignment (their gates live on the sender) by the mirrored
//      all-to-all-v, into dispatch order.
// Backward mirrors it: d outputs travel out per assignment, expert backward, and the d inputs of
// one token row are summed on the receiver before they travel back once (the sender only adds
// them into dx anyway; this moves fp32 additions from the sender to the receiver, a change of
// summation order within the layouts' tolerance); those of this rank's own rows are added
// straight into d_dispatched, per assignment. BF16 returns them per assignment instead: a sum
// of bf16 values is no bf16 value, and rounding it on the wire would add an error one process
// does not make. Expert weight gradients accumulate here only for local experts; the trainer
// reduces them over replicas. Empty messages (an expert or a rank with no tokens) are legal
// everywhere. Group-limited routing (a token's experts on few ranks) therefore moves fewer bytes.
// The price is two row copies (the sender's gather of token rows, the receiver's copies into
// blocks) and the map's all-to-all-v: over shared memory they cost more than the bytes save
// (README, expert_exchange_bench); across hosts the bytes are what counts.
//
// BF16 (dims.precision kBf16): all four exchanges carry bf16 rows, half the bytes, as a TPU run
// sends its bf16 activations. Numerically free or layout-neutral: the expert inputs (forward) and
// output gradients (backward) only feed bf16 GEMMs, which round them anyway; the expert outputs and
// input gradients are rounded by ExpertBlocksForward / Backward in every layout, one process
// included, so the wire's rounding is exact. (The gradient reduction has its own wire option,
// train.grad_reduce_dtype: parallel/grad_reducer.h.)
//
// Pipelining (chunks > 1, train.expert_exchange_chunks): the token rows to each rank are cut
// into `chunks` equal parts in their order (part k of n rows is [k n / chunks, (k + 1) n /
// chunks)), and an assignment belongs to its token row's chunk (to this rank: its assignments
// are cut by position): chunk k's token rows travel in
// one all-to-all-v, its assignments compute and return together. So the dedup is over the whole
// exchange (the same rows travel as unchunked). Chunk k + 1's rows are in flight (driven by the
// CommThread) while the experts compute chunk k, and chunk k's outputs start back as soon as they
// are computed; the backward does the same with the gradients. Received rows lie chunk-major
// (then source, then expert, in dispatch order), so a chunk's blocks are contiguous; the sender
// stages the per-assignment rows in that order (one copy each way). Every row meets the same
// expert arithmetic as unchunked; only the weight gradients' sums over rows are cut differently
// (fp32 rounding). Empty chunks (fewer token rows than `chunks`) are fine.
//
// The runner owns its exchange state, one per MoE layer (keyed by the `layer` its caller passes,
// the decoder's layer index), from a layer's Forward to its Backward; the experts' activations
// stay in the layer's MoeCache, and the temporaries (the experts' outputs and the backward's
// gradients, (R, d) and (A, d), and the token rows sent and received) come from the cache's
// scratch arena. The experts run through
// ExpertBlocksForward / Backward (model/expert_ffn.h), the same loop as on one process.
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
// layer call), summed since construction; each row is d_model floats. Dispatch rows are token
// rows (one per token and destination rank), so they count what travels, not assignments.
struct ExchangeCounters {
  int64_t exchanges = 0;
  int64_t rows_remote = 0;         // rows sent to other ranks
  int64_t rows_local = 0;          // rows this rank copies to itself (dispatch: per assignment)
  int64_t bytes_remote = 0;        // payload bytes of rows_remote: d_model x 4 (fp32) or x 2 (bf16)
  int64_t index_bytes_remote = 0;  // the token-row map sent to other ranks: 4 per assignment
};

// Rows of one exchange per chunk and rank: sent[k][q] leave this rank for rank q in chunk k,
// received[k][q] arrive from rank q; the return direction swaps the two.
struct ChunkRows {
  std::vector<std::vector<int64_t>> sent, received;  // (chunks)(ranks)
};

// What the exchange of one MoE layer keeps between its forward and backward.
struct ExpertExchangeState {
  std::vector<int64_t> send_rows;   // (ranks) assignments sent to each rank, in dispatch order
  std::vector<int64_t> recv_rows;   // (ranks) assignments received from each rank
  std::vector<ExpertBlock> blocks;  // runs of received rows, one per (chunk, source rank, local
                                    // expert): receive order, chunk-major, source, then expert
  Tensor recv;                      // (R, d) received assignments' rows: the local experts' inputs
  ChunkRows assigned;  // assignments per (chunk, rank): the combine, the backward's d outputs
  ChunkRows tokens;    // token rows per (chunk, rank): the dispatch, the backward's summed d inputs
  std::vector<size_t> chunk_blocks;  // chunk k's blocks: [chunk_blocks[k], chunk_blocks[k + 1])
  // The dispatch row each sent token row is copied from (U_sent), in wire order: chunk-major,
  // then destination, then first appearance in dispatch order. Rows for this rank skip the wire.
  std::vector<int64_t> token_source;
  // Per received assignment row (R), what it is a copy of: t >= 0, received token row t (wire
  // order); t < 0, this rank's own dispatch row -1 - t.
  std::vector<int64_t> token_of_row;
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
  // From the (ranks, E) counts sent: the state's sent rows, token rows and send order; returns
  // the token-row map (A, dispatch order): each assignment's token row within its destination's.
  std::vector<int32_t> PlanSend(const std::vector<int64_t>& counts, const Routing& routing,
                                int64_t tokens, ExpertExchangeState& s) const;
  // From the (ranks, E) counts received and the maps received (source-major): the received rows,
  // blocks and token_of_row.
  void PlanReceive(const std::vector<int64_t>& recv_counts, const std::vector<int32_t>& maps,
                   ExpertExchangeState& s) const;
  void CountRows(const MoeDims& dims, const std::vector<int64_t>& send_rows);
  // One blocking all-to-all-v of rows: send_rows[q] rows to rank q, recv_rows[q] from rank q.
  // kBf16: the rows travel as bf16 (recv gets them back as floats).
  void Exchange(const MoeDims& dims, const float* send, const std::vector<int64_t>& send_rows,
                float* recv, const std::vector<int64_t>& recv_rows);
  // Both exchanges of one pass around the experts: out_send's rows (`out`'s sent rows per chunk,
  // chunk-major) go out into out_recv, `compute(k)` runs chunk k once its rows are in (it writes
  // back_send's rows of it), and those return (`back`'s received rows out, its sent rows in) into
  // back_recv. Chunked: chunk k + 1's rows are in flight on thread_ while chunk k computes and
  // chunk k returns while k + 1 computes; one chunk: blocking all-to-all-v's. The phases: waiting
  // for rows out, computing, waiting for rows back.
  void ExchangeAround(const MoeDims& dims, const ChunkRows& out, const ChunkRows& back,
                      const float* out_send, float* out_recv, const float* back_send,
                      float* back_recv, const std::function<void(int64_t chunk)>& compute,
                      Phase out_phase, Phase compute_phase, Phase back_phase);

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
