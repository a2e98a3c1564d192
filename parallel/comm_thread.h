// CommThread: drives chains of nonblocking collectives to completion while the caller computes.
//
// Open MPI 4.1 advances a nonblocking collective only inside MPI calls: one started before a long
// GEMM sits idle until the GEMM ends. A CommThread runs a thread of its own (MPI_THREAD_MULTIPLE)
// that tests the collectives in flight every `poll_microseconds` and starts each task's next stage
// as soon as the previous one completes, so the link stays busy through the compute. Without a
// thread (threaded = false: a library without MPI_THREAD_MULTIPLE, or one process) the same work
// happens in Poll(), which the owner calls between its compute steps, and in Wait().
//
// An AsyncTask is a chain of collectives with local work between them (the BF16 wire's
// reduce-scatter, fp32 sum, all-gather) over one communicator. Every rank must submit the tasks of
// one communicator in the same order, as for blocking collectives; the CommThread then issues
// their collectives in one order on every rank, whatever order they complete in: a task issues
// its first collective only once every earlier task on its communicator has issued all of its
// own, so on a communicator the sequence is task by task, stage by stage. (Single-collective
// tasks therefore start at once, several in flight; a chained task holds back the later ones
// of its communicator until its last stage is out.) The collectives a CommThread runs must use
// communicators no other thread uses at the same time (Communicator::Duplicate). Submit, Wait and
// WaitAll are called by one owner thread.
//
// Background tasks (the gradient buckets, whose results are needed only when the backward ends)
// give way on the link to urgent traffic (the expert exchange, which the compute waits for): while
// an urgent task is queued or running, or the owner holds an UrgentScope around a blocking
// exchange, background tasks issue no collective (those in flight go on). Deferring a collective
// keeps every rank's order on its communicator, so it cannot change a result. Background and
// urgent tasks must not share a communicator (a held background task would hold the urgent one
// behind it), and the owner must not wait for a background task inside an UrgentScope.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/communicator.h"

namespace openmoe {

class AsyncTask {
 public:
  virtual ~AsyncTask() = default;
  // The communicator of every collective of the task, and how many collectives it issues.
  virtual const Communicator* comm() const = 0;
  virtual int stages() const = 0;
  // Whether the task gives way to urgent traffic (see CommThread).
  virtual bool background() const { return false; }
  // Starts the first stage (called once, on the progress thread or in Poll).
  virtual std::unique_ptr<PendingCollective> Begin() = 0;
  // The current stage completed: does the local work after it and returns the next stage, or
  // null when the task is done (its results are in place).
  virtual std::unique_ptr<PendingCollective> Next() = 0;

 private:
  friend class CommThread;
  bool done_ = true;  // guarded by its CommThread's mutex
};

class CommThread {
 public:
  explicit CommThread(bool threaded, int poll_microseconds = 50);
  ~CommThread();  // finishes every submitted task first
  CommThread(const CommThread&) = delete;
  CommThread& operator=(const CommThread&) = delete;

  bool threaded() const { return threaded_; }

  // Queues `task`, which must live until it is done and not be queued twice at once.
  void Submit(AsyncTask* task);
  // Blocks until `task` is done (at once if it was never submitted).
  void Wait(AsyncTask* task);
  // Blocks until every submitted task is done.
  void WaitAll();
  // Unthreaded: starts queued tasks and advances those in flight (a no-op when threaded).
  void Poll();

  // While one lives, background tasks issue no collective: for an exchange the owner runs itself
  // (blocking). `thread` may be null (no CommThread: nothing to hold).
  class UrgentScope {
   public:
    explicit UrgentScope(CommThread* thread) : thread_(thread) {
      if (thread_ != nullptr) thread_->urgent_scopes_.fetch_add(1);
    }
    ~UrgentScope() {
      if (thread_ != nullptr && thread_->urgent_scopes_.fetch_sub(1) == 1) thread_->Wake();
    }
    UrgentScope(const UrgentScope&) = delete;
    UrgentScope& operator=(const UrgentScope&) = delete;

   private:
    CommThread* thread_;
  };

 private:
  struct Running {
    AsyncTask* task;
    std::unique_ptr<PendingCollective> stage;  // the collective in flight
    int issued = 0;                            // collectives issued so far
  };
  // Advances every task once: starts the queued ones, tests those in flight. Returns whether any
  // made progress. Called with mu_ not held, by the progress thread or the owner (unthreaded).
  bool Advance();
  void Loop();
  // An urgent task is running or an UrgentScope lives (by whoever runs Advance).
  bool UrgentWork() const;
  // Ends the progress thread's idle wait: held work may go, or the owner waits for a result.
  void Wake();
  // Returns once done() (read under mu_) holds: waits for the thread, or without one advances.
  template <typename Done>
  void WaitUntil(Done done);

  const bool threaded_;
  const int poll_microseconds_;
  std::mutex mu_;
  std::condition_variable work_cv_;  // new work, or stop
  std::condition_variable done_cv_;  // a task finished
  std::deque<Running> queued_;       // submitted, not yet taken by Advance (guarded by mu_)
  std::vector<Running> running_;     // owned by whoever runs Advance
  int64_t unfinished_ = 0;           // submitted, not done (guarded by mu_)
  bool stop_ = false;                // guarded by mu_
  bool wake_ = false;                // guarded by mu_: see Wake
  int owner_waiting_ = 0;            // guarded by mu_: the owner is in Wait or WaitAll
  std::atomic<int> urgent_scopes_{0};  // UrgentScopes alive
  std::thread thread_;
};

}  // namespace openmoe
