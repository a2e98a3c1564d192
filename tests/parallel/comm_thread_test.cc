// CommThread's priorities, in one process with tasks whose collectives complete when the test
// says: a background task issues nothing while an urgent task is in flight or an UrgentScope is
// alive, and goes on once they end; the chain of a task's stages is kept.
#include "parallel/comm_thread.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "parallel/communicator.h"

namespace openmoe {
namespace {

// Completes once *release is set.
class GatedCollective final : public PendingCollective {
 public:
  explicit GatedCollective(const std::atomic<bool>* release) : release_(release) {}
  bool Test() override { return release_->load(); }

 private:
  const std::atomic<bool>* release_;
};

// A task of `stages` gated collectives on `comm`, counting the collectives it issued.
class GatedTask final : public AsyncTask {
 public:
  GatedTask(const Communicator* comm, bool background, int stages)
      : comm_(comm), background_(background), stages_(stages) {}
  const Communicator* comm() const override { return comm_; }
  int stages() const override { return stages_; }
  bool background() const override { return background_; }
  std::unique_ptr<PendingCollective> Begin() override {
    issued.fetch_add(1);
    return std::make_unique<GatedCollective>(&release);
  }
  std::unique_ptr<PendingCollective> Next() override {
    if (issued.load() == stages_) return nullptr;
    issued.fetch_add(1);
    return std::make_unique<GatedCollective>(&release);
  }
  std::atomic<int> issued{0};
  std::atomic<bool> release{false};

 private:
  const Communicator* comm_;
  bool background_;
  int stages_;
};

// Long enough for a progress thread polling every 50-800 us to have acted many times.
void Settle() { std::this_thread::sleep_for(std::chrono::milliseconds(30)); }

TEST(CommThread, BackgroundTasksWaitForAnUrgentTask) {
  for (bool threaded : {true, false}) {
    SelfCommunicator a_comm, b_comm;
    const Communicator* a = &a_comm;
    const Communicator* b = &b_comm;
    CommThread thread(threaded);
    GatedTask urgent(a, /*background=*/false, 1), bucket(b, /*background=*/true, 2);
    thread.Submit(&urgent);
    thread.Submit(&bucket);
    for (int i = 0; i < 5; ++i) {
      thread.Poll();
      Settle();
    }
    EXPECT_EQ(urgent.issued.load(), 1);
    EXPECT_EQ(bucket.issued.load(), 0) << "threaded " << threaded;
    bucket.release = true;  // would complete at once if it were issued
    urgent.release = true;
    thread.Wait(&urgent);
    thread.Wait(&bucket);
    EXPECT_EQ(bucket.issued.load(), 2);
  }
}

TEST(CommThread, BackgroundTasksWaitWhileAnUrgentScopeLives) {
  for (bool threaded : {true, false}) {
    SelfCommunicator b_comm;
    const Communicator* b = &b_comm;
    CommThread thread(threaded);
    GatedTask bucket(b, /*background=*/true, 2), later(b, /*background=*/true, 1);
    bucket.release = later.release = true;
    {
      CommThread::UrgentScope scope(&thread);
      thread.Submit(&bucket);
      thread.Submit(&later);
      for (int i = 0; i < 5; ++i) {
        thread.Poll();
        Settle();
      }
      EXPECT_EQ(bucket.issued.load(), 0) << "threaded " << threaded;
      EXPECT_EQ(later.issued.load(), 0);
    }
    thread.WaitAll();  // the scope is gone: both run, in order
    EXPECT_EQ(bucket.issued.load(), 2);
    EXPECT_EQ(later.issued.load(), 1);
  }
  CommThread::UrgentScope no_thread(nullptr);  // nothing to hold
}

// A background task's chain, started before the urgent task arrives, goes on with the stage in
// flight but issues its next stage only after the urgent task is done.
TEST(CommThread, AHeldChainKeepsItsStageInFlight) {
  SelfCommunicator a_comm, b_comm;
  const Communicator* a = &a_comm;
  const Communicator* b = &b_comm;
  CommThread thread(true);
  GatedTask bucket(b, /*background=*/true, 2), urgent(a, /*background=*/false, 1);
  thread.Submit(&bucket);
  Settle();
  ASSERT_EQ(bucket.issued.load(), 1);
  thread.Submit(&urgent);
  Settle();
  bucket.release = true;  // its first stage completes while the urgent one is in flight
  Settle();
  EXPECT_EQ(bucket.issued.load(), 1);
  urgent.release = true;
  thread.WaitAll();
  EXPECT_EQ(bucket.issued.load(), 2);
}

}  // namespace
}  // namespace openmoe
