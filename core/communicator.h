// Communicator: the collectives the trainer needs, over a group of ranks.
//
// The interface lives in core/ so that the model's tensor-parallel code (model/) can take the
// communicator of its model group; the implementations are in parallel/communicator.h.
// Two implementations: MpiCommunicator (an MPI communicator) and SelfCommunicator (one rank, no
// MPI at all), so everything above this interface runs in single-process tests. Every method is
// collective: all ranks of the communicator call it, in the same order, with matching sizes.
// Failed MPI calls abort with file and line (a broken invariant, not user input).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace openmoe {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place: data (n) becomes the element-wise sum over ranks.
  virtual void AllReduceSum(float* data, int64_t n) = 0;
  virtual void AllReduceSum(double* data, int64_t n) = 0;
  virtual void AllReduceSum(int64_t* data, int64_t n) = 0;
  // In place: data (n) becomes the element-wise minimum (maximum) over ranks.
  virtual void AllReduceMin(int64_t* data, int64_t n) = 0;
  virtual void AllReduceMax(float* data, int64_t n) = 0;

  // Every rank sends `per_rank` values to every rank: send (size * per_rank), block q to rank q;
  // recv (size * per_rank), block q from rank q.
  virtual void AllToAll(const int64_t* send, int64_t* recv, int64_t per_rank) = 0;

  // Variable all-to-all of floats: send holds send_counts[q] floats for rank q, back to back in
  // rank order; recv receives recv_counts[q] floats from rank q likewise. Counts must agree
  // pairwise (exchange them first with AllToAll). Zero counts are fine.
  virtual void AllToAllV(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                         const std::vector<int64_t>& recv_counts) = 0;
  // The same for 16-bit values (bf16 rows on the wire); counts are in values.
  virtual void AllToAllV(const uint16_t* send, const std::vector<int64_t>& send_counts,
                         uint16_t* recv, const std::vector<int64_t>& recv_counts) = 0;

  // Rank `root`'s bytes to every rank (resized on receivers).
  virtual void Broadcast(std::string* bytes, int root) = 0;

  // A sub-communicator of the ranks passing the same color, ordered by key.
  virtual std::unique_ptr<Communicator> Split(int color, int key) = 0;

  // How many ranks of this communicator share this rank's machine (shared memory), itself
  // included: to share out the machine's cores.
  virtual int LocalSize() = 0;
};


}  // namespace openmoe
