#include "launch/console.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"

namespace openmoe::console {
namespace {

constexpr size_t kMaxQueuedBytes = 4 << 20;

struct Line {
  int fd;
  std::string text;
};

// Never destroyed: the writer thread may still be blocked in write(2) when the process exits.
struct State {
  std::mutex mu;
  std::condition_variable changed;
  std::deque<Line> queue;
  size_t queued_bytes = 0;
  bool writing = false;        // the writer holds a line outside the queue
  int64_t dropped = 0;         // total
  int64_t unreported = 0;      // dropped since the last report
  bool started = false;
};

State& GetState() {
  static State* state = new State();
  return *state;
}

void WriteAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a closed pipe: the line is lost, training goes on
    done += static_cast<size_t>(n);
  }
}

void WriterLoop() {
  State& s = GetState();
  std::unique_lock<std::mutex> lock(s.mu);
  for (;;) {
    s.changed.wait(lock, [&] { return !s.queue.empty(); });
    Line line = std::move(s.queue.front());
    s.queue.pop_front();
    s.queued_bytes -= line.text.size();
    s.writing = true;
    lock.unlock();
    WriteAll(line.fd, line.text);
    lock.lock();
    s.writing = false;
    if (s.unreported > 0 && s.queue.empty()) {
      const std::string note = absl::StrFormat(
          "openmoe: warning: %d console lines dropped while output was stalled\n", s.unreported);
      s.unreported = 0;
      s.queue.push_back({STDERR_FILENO, note});
      s.queued_bytes += note.size();
    }
    s.changed.notify_all();
  }
}

void Enqueue(int fd, std::string text) {
  State& s = GetState();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.started) {
    std::thread(WriterLoop).detach();
    s.started = true;
  }
  if (s.queued_bytes + text.size() > kMaxQueuedBytes) {
    ++s.dropped;
    ++s.unreported;
    return;
  }
  s.queued_bytes += text.size();
  s.queue.push_back({fd, std::move(text)});
  s.changed.notify_all();
}

}  // namespace

void Out(const std::string& line) { Enqueue(STDOUT_FILENO, line + "\n"); }

void Warn(const std::string& line) {
  Enqueue(STDERR_FILENO, absl::StrFormat("openmoe: warning: %s\n", line));
}

bool Flush(double timeout_seconds) {
  State& s = GetState();
  std::unique_lock<std::mutex> lock(s.mu);
  return s.changed.wait_for(lock, std::chrono::duration<double>(timeout_seconds),
                            [&] { return s.queue.empty() && !s.writing; });
}

int64_t Dropped() {
  State& s = GetState();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.dropped;
}

}  // namespace openmoe::console
