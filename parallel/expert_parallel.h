// Expert parallelism: the MoE experts run on the ranks that hold them, reached by all-to-all.
//
// Forward (collective over `comm`, every rank calls it once per MoE layer, in layer order):
//   1. each kept assignment (token t of chip c, expert e) goes to the chip of c's expert group
//      that holds e, hence to that chip's rank; rows are bucketed by (destination rank, expert);
//   2. counts travel first (one all-to-all of E counts per rank pair), then the rows
//      (an all-to-all-v aggregated per rank pair, so no padding to capacity is sent; pairs on one
//      rank are copies);
//   3. each local expert runs once on all rows it received, from every source;
//   4. outputs return by the mirrored all-to-all-v into dispatch order.
// Backward mirrors it: d outputs travel out, expert backward, d inputs travel back. Expert weight
// gradients accumulate here only for local experts; the trainer reduces them over replicas.
// Empty messages (an expert or a rank with no tokens) are legal everywhere.
#pragma once

#include <cstdint>

#include "model/moe.h"
#include "parallel/communicator.h"
#include "parallel/mesh.h"

namespace openmoe {

// Bytes moved by the all-to-alls (for the cost model and benchmarks), summed since construction.
struct ExchangeCounters {
  int64_t calls = 0;
  int64_t rows_sent_remote = 0;  // rows to other ranks
  int64_t rows_sent_local = 0;   // rows to this rank (copies)
};

class ExpertParallelRunner final : public ExpertRunner {
 public:
  // comm: the ranks of the mesh (world). Both must outlive the runner.
  ExpertParallelRunner(const Mesh& mesh, Communicator* comm) : mesh_(mesh), comm_(comm) {}

  // dims.tokens is this rank's token count: its chips' rows, chip-major, for this microbatch.
  void Forward(const MoeDims& dims, const MoeWeights& w, MoeCache* cache) override;
  void Backward(const MoeDims& dims, const MoeWeights& w, const MoeGrads& grads, MoeCache* cache,
                const float* d_expert_out, float* d_dispatched) override;

  const ExchangeCounters& counters() const { return counters_; }

 private:
  // Sends `rows_in_send_order` (send order) out and brings the local experts' view back
  // expert-major into state.expert_in-shaped `expert_major` (R, d).
  void ScatterToExperts(int64_t d, ExpertExchangeState& state, float* expert_major);
  // The reverse: expert-major rows (R, d) back to their senders, into `back` (A, d) send order.
  void GatherFromExperts(int64_t d, ExpertExchangeState& state, const float* expert_major,
                         float* back);

  const Mesh& mesh_;
  Communicator* comm_;
  ExchangeCounters counters_;
};

}  // namespace openmoe
