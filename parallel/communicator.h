// Communicator implementations: SelfCommunicator (one rank, no MPI) and the MPI one; the
// interface is core/communicator.h.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/communicator.h"

namespace openmoe {

// One rank: reductions are identities, all-to-alls are copies.
class SelfCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void AllReduceSum(float*, int64_t) override {}
  void AllReduceSum(double*, int64_t) override {}
  void AllReduceSum(int64_t*, int64_t) override {}
  void AllReduceMin(int64_t*, int64_t) override {}
  void AllReduceMax(float*, int64_t) override {}
  void AllToAll(const int64_t* send, int64_t* recv, int64_t per_rank) override;
  void AllToAllV(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                 const std::vector<int64_t>& recv_counts) override;
  void AllToAllV(const uint16_t* send, const std::vector<int64_t>& send_counts, uint16_t* recv,
                 const std::vector<int64_t>& recv_counts) override;
  void Broadcast(std::string*, int) override {}
  std::unique_ptr<Communicator> Split(int, int) override;
  std::unique_ptr<Communicator> Duplicate() override;
  bool ThreadSafe() const override { return true; }
  int LocalSize() override { return 1; }
};

// MPI_COMM_WORLD, or any communicator derived from it. Requires InitMpi.
std::unique_ptr<Communicator> MakeWorldCommunicator();

// MPI_Init_thread and MPI_Finalize, once per process (the binary's main when a launcher started
// it: alone it runs on a SelfCommunicator; the MPI tests' and benches' mains). Asks for
// MPI_THREAD_MULTIPLE (the gradient reducer's progress thread runs collectives beside the
// compute thread's); a library that gives less leaves communicators !ThreadSafe(), and the
// reducer then progresses from the compute thread instead.
void InitMpi(int* argc, char*** argv);
void FinalizeMpi();

// After an uncaught error: when MPI is up and not yet finalized, aborts the whole job if it has
// several ranks (the others may be blocked in a collective) and finalizes a single rank so that
// its exit is clean. Does nothing otherwise.
void EndMpiAfterFailure();

}  // namespace openmoe
