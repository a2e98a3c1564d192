#include "parallel/comm_thread.h"

#include <algorithm>
#include <chrono>

#include "core/check.h"

namespace openmoe {

CommThread::CommThread(bool threaded, int poll_microseconds)
    : threaded_(threaded), poll_microseconds_(poll_microseconds) {
  if (threaded_) thread_ = std::thread([this] { Loop(); });
}

CommThread::~CommThread() {
  WaitAll();
  if (threaded_) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    thread_.join();
  }
}

void CommThread::Submit(AsyncTask* task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    OPENMOE_CHECK_MSG(task->done_, "a task was submitted again before it was done");
    task->done_ = false;
    ++unfinished_;
    queued_.push_back({task, nullptr, false});
  }
  if (threaded_) work_cv_.notify_one();
}

bool CommThread::UrgentWork() const {
  return urgent_scopes_.load() > 0 ||
         std::any_of(running_.begin(), running_.end(),
                     [](const Running& r) { return !r.task->background(); });
}

void CommThread::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  work_cv_.notify_one();
}

template <typename Done>
void CommThread::WaitUntil(Done done) {
  if (threaded_) {
    std::unique_lock<std::mutex> lock(mu_);
    if (done()) return;
    // The owner waits: what is left is the step's exposed tail, polled at the full rate.
    ++owner_waiting_;
    wake_ = true;
    work_cv_.notify_one();
    done_cv_.wait(lock, done);
    --owner_waiting_;
    return;
  }
  for (;;) {  // no thread: this one drives the work until it is done
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (done()) return;
    }
    Advance();
  }
}

void CommThread::Wait(AsyncTask* task) {
  WaitUntil([&] { return task->done_; });
}

void CommThread::WaitAll() {
  WaitUntil([&] { return unfinished_ == 0; });
}

void CommThread::Poll() {
  if (!threaded_) Advance();
}

bool CommThread::Advance() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (!queued_.empty()) {
      running_.push_back(std::move(queued_.front()));
      queued_.pop_front();
    }
  }
  bool progressed = false;
  std::vector<AsyncTask*> finished;
  // Communicators on which an earlier task still has collectives to issue: later tasks on them
  // wait, so that every rank issues the same sequence.
  std::vector<const Communicator*> unsettled;
  // Urgent traffic holds the background tasks back (read once: a scope opening meanwhile holds
  // them from the next round).
  const bool urgent = UrgentWork();
  for (size_t i = 0; i < running_.size();) {
    Running& r = running_[i];
    const Communicator* comm = r.task->comm();
    const bool may_issue =
        std::find(unsettled.begin(), unsettled.end(), comm) == unsettled.end() &&
        !(urgent && r.task->background());
    bool done = false;
    if (r.issued == 0 && may_issue) {
      r.stage = r.task->Begin();
      r.issued = 1;
      progressed = true;
      done = r.stage == nullptr;  // nothing to send
    }
    // Stages may complete at once (one rank, a tiny message): chain through them.
    while (!done && r.issued > 0 && r.stage->Test()) {
      if (r.issued < r.task->stages() && !may_issue) break;  // its next collective must wait
      progressed = true;
      r.stage = r.task->Next();
      if (r.stage == nullptr) {
        done = true;
      } else {
        ++r.issued;
      }
    }
    if (done) {
      finished.push_back(r.task);
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
      continue;
    }
    if (r.issued < r.task->stages()) unsettled.push_back(comm);
    ++i;
  }
  if (!finished.empty()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (AsyncTask* t : finished) t->done_ = true;
      unfinished_ -= static_cast<int64_t>(finished.size());
    }
    done_cv_.notify_all();
  }
  return progressed;
}

void CommThread::Loop() {
  int sleep_us = poll_microseconds_;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || !queued_.empty() || !running_.empty(); });
      if (stop_ && queued_.empty() && running_.empty()) return;
    }
    // Collectives in flight: test them often enough to keep the link busy, without spinning a
    // core the compute needs (the ranks' cores are all busy with GEMMs). Idle rounds with only
    // background work back off to 16x the interval: a bucket that takes milliseconds on the wire
    // needs no test every 50 us, and each test costs the compute some CPU.
    if (Advance()) {
      sleep_us = poll_microseconds_;
    } else if (!running_.empty()) {
      const bool urgent = UrgentWork();
      std::unique_lock<std::mutex> lock(mu_);  // new work or Wake ends the wait
      work_cv_.wait_for(lock, std::chrono::microseconds(sleep_us),
                        [&] { return stop_ || wake_ || !queued_.empty(); });
      const bool full_rate = urgent || wake_ || owner_waiting_ > 0;
      wake_ = false;
      sleep_us = full_rate ? poll_microseconds_ : std::min(2 * sleep_us, 16 * poll_microseconds_);
    }
  }
}

}  // namespace openmoe
