#include "launch/checkpoint/stop_signal.h"

#include <csignal>
#include <cstdint>

namespace openmoe {
namespace {

constexpr int kStopSignals[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
constexpr int kNumStopSignals = sizeof(kStopSignals) / sizeof(kStopSignals[0]);

volatile std::sig_atomic_t g_received = 0;
struct sigaction g_previous[kNumStopSignals];

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
  for (int i = 0; i < kNumStopSignals; ++i) sigaction(kStopSignals[i], &action, &g_previous[i]);
}

StopSignalHandler::~StopSignalHandler() {
  for (int i = 0; i < kNumStopSignals; ++i) sigaction(kStopSignals[i], &g_previous[i], nullptr);
}

int StopSignalHandler::Received() { return g_received; }

bool StopSignalHandler::AnyRankRequested(Communicator& comm) {
  int64_t requested = g_received != 0 ? 1 : 0;
  comm.AllReduceSum(&requested, 1);
  return requested > 0;
}

const char* StopSignalHandler::Name(int sig) {
  switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "a signal";
  }
}

}  // namespace openmoe
