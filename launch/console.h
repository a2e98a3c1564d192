// The training run's console output, which must never block a step.
//
// Under mpirun a rank's stdout and stderr are pipes to Open MPI's daemon; when it stops reading
// (it does while it handles a SIGTERM, or a terminal is paused) a plain printf blocks the rank, and
// with it every other rank at the next collective. Lines given here go to a bounded queue that one
// writer thread drains with write(2); when the queue is full a line is dropped, counted, and the
// count is reported once the output moves again. Order is kept between the two streams.
//
// Any thread of any rank may call these; callers choose which rank prints (usually rank 0).
#pragma once

#include <cstdint>
#include <string>

namespace openmoe::console {

// Queues `line` and a newline for stdout.
void Out(const std::string& line);
// Queues "openmoe: warning: <line>" and a newline for stderr.
void Warn(const std::string& line);
// Waits at most `timeout_seconds` for the queue to be written; false if output is still stalled
// (the process may then exit: the writer thread never holds a lock while it writes).
bool Flush(double timeout_seconds);
// Lines dropped so far because the output was stalled.
int64_t Dropped();

}  // namespace openmoe::console
