// SIGTERM and SIGINT as a request to stop cleanly: finish the step, save, exit 0 (the way a
// preempted TPU job behaves).
//
// The handler only sets a flag. After every step the training loop (CheckpointSession::AfterStep)
// sums Received() != 0 over the ranks, as AnyRankRequested() does, so that every rank stops after
// the same step even when the signal reached only some of them. A second signal while a stop is
// pending gets the default action (a second Ctrl-C kills).
//
// Under mpirun: Open MPI forwards SIGTERM to the ranks and kills them odls_base_sigkill_timeout
// seconds later (default 1): raise it (`--mca odls_base_sigkill_timeout 120`) or signal the ranks
// directly (as Slurm does) so that the save can finish.
#pragma once

#include "parallel/communicator.h"

namespace openmoe {

class StopSignalHandler {
 public:
  // Installs the handlers (and clears any earlier request); the destructor restores the previous
  // ones. One instance at a time.
  StopSignalHandler();
  ~StopSignalHandler();
  StopSignalHandler(const StopSignalHandler&) = delete;
  StopSignalHandler& operator=(const StopSignalHandler&) = delete;

  // The signal received by this process (SIGTERM or SIGINT), or 0.
  static int Received();
  // Collective over `comm`: whether any rank received one.
  static bool AnyRankRequested(Communicator& comm);
};

}  // namespace openmoe
