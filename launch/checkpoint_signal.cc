#include "launch/checkpoint_signal.h"

#include <csignal>
#include <cstdint>

namespace openmoe {
namespace {

volatile std::sig_atomic_t g_received = 0;
struct sigaction g_previous_term, g_previous_int;

void OnSignal(int sig) {
  if (g_received != 0) {  // second signal: give up on the clean stop
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_received = sig;
}

}  // namespace

StopSignalHandler::StopSignalHandler() {
  g_received = 0;
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // blocking I/O and MPI calls resume
  sigaction(SIGTERM, &action, &g_previous_term);
  sigaction(SIGINT, &action, &g_previous_int);
}

StopSignalHandler::~StopSignalHandler() {
  sigaction(SIGTERM, &g_previous_term, nullptr);
  sigaction(SIGINT, &g_previous_int, nullptr);
}

int StopSignalHandler::Received() { return g_received; }

bool StopSignalHandler::AnyRankRequested(Communicator& comm) {
  int64_t requested = g_received != 0 ? 1 : 0;
  comm.AllReduceSum(&requested, 1);
  return requested > 0;
}

}  // namespace openmoe
