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

// A collective started by one of Communicator's Start* methods and not yet complete. Its buffers
// belong to it until Test() has returned true. Used by one thread at a time. Destroying an
// incomplete one waits for it.
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  // True once the collective is complete on this rank (then its output buffers hold the result).
  // Each call also drives the library's progress (Open MPI advances nonblocking collectives only
  // inside MPI calls).
  virtual bool Test() = 0;
};

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

  // Nonblocking collectives: each starts the collective and returns at once; the result is there
  // once the returned PendingCollective's Test() says so. They are ordered with this
  // communicator's other collectives as MPI orders collectives: by the order ranks start them.
  // The defaults here run the blocking collective and return a completed one (single-process
  // and test communicators); the MPI communicator overrides them.
  // All-gather of blocks of different sizes: every rank's `counts[rank]` values at `send` reach
  // every rank; recv holds block q (counts[q] values) after blocks 0..q-1, back to back. `send`
  // may be this rank's own block inside recv (in place).
  virtual std::unique_ptr<PendingCollective> StartAllGatherV(const float* send, float* recv,
                                                             const std::vector<int64_t>& counts);
  virtual std::unique_ptr<PendingCollective> StartAllGatherV(const uint16_t* send, uint16_t* recv,
                                                             const std::vector<int64_t>& counts);
  // AllToAllV, nonblocking (counts copied; the buffers must stay alive until complete).
  virtual std::unique_ptr<PendingCollective> StartAllToAllV(
      const float* send, const std::vector<int64_t>& send_counts, float* recv,
      const std::vector<int64_t>& recv_counts);
  virtual std::unique_ptr<PendingCollective> StartAllToAllV(
      const uint16_t* send, const std::vector<int64_t>& send_counts, uint16_t* recv,
      const std::vector<int64_t>& recv_counts);

  // A communicator of the same ranks whose collectives never match this one's, so another thread
  // may run collectives on it while this one is in use. Collective. (Default: unsupported, a
  // broken invariant for the communicators that do not override it.)
  virtual std::unique_ptr<Communicator> Duplicate();
  // Whether two threads may call collectives (on different communicators) at the same time: MPI
  // was initialised with MPI_THREAD_MULTIPLE. Default false.
  virtual bool ThreadSafe() const { return false; }

  // Rank `root`'s bytes to every rank (resized on receivers).
  virtual void Broadcast(std::string* bytes, int root) = 0;

  // A sub-communicator of the ranks passing the same color, ordered by key.
  virtual std::unique_ptr<Communicator> Split(int color, int key) = 0;

  // How many ranks of this communicator share this rank's machine (shared memory), itself
  // included: to share out the machine's cores.
  virtual int LocalSize() = 0;
};


}  // namespace openmoe
