// `openmoe train`: the training loop.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "core/communicator.h"
#include "proto/job.pb.h"

namespace openmoe {

// Trains per `spec` (already loaded and validated) on the ranks of `world` (MPI_COMM_WORLD under
// mpirun, a SelfCommunicator for a process started alone). `job_description` names the job files
// for messages. Called on every rank; returns a non-OK status naming the file, field or rank at
// fault on bad input.
absl::Status RunTrain(const JobSpec& spec, const std::string& job_description, Communicator* world);

}  // namespace openmoe
