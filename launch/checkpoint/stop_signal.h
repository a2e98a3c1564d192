// SIGUSR1, SIGUSR2, SIGTERM and SIGINT as a request to stop cleanly: finish the step, save, exit 0
// (the way a preempted TPU job behaves).
//
// The handler only sets a flag. After every step the training loop (CheckpointSession::AfterStep)
// sums Received() != 0 over the ranks, as AnyRankRequested() does, so that every rank stops after
// the same step even when the signal reached only some of them. A second signal while a stop is
// pending gets the default action (a second Ctrl-C kills).
//
// Under mpirun, signal mpirun with SIGUSR1 (or SIGUSR2): Open MPI 4.1 forwards both to every rank at
// once. SIGTERM to mpirun does not work as a preemption notice: mpirun sends the ranks SIGCONT,
// waits odls_base_sigkill_timeout, sends SIGTERM, waits again and sends SIGKILL, and it stops
// forwarding the ranks' output meanwhile, so the ranks see the SIGTERM late (or never) and mpirun
// exits 1. SIGTERM sent to the ranks themselves (as Slurm's scancel does without mpirun) works.
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

  // The signal received by this process (one of the four above), or 0.
  static int Received();
  // Collective over `comm`: whether any rank received one.
  static bool AnyRankRequested(Communicator& comm);
  // "SIGUSR1", "SIGTERM", ...; "a signal" for others.
  static const char* Name(int sig);
};

}  // namespace openmoe
