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

// What a test expects the thread to have done: polled for (Poll drives an unthreaded one) until
// it holds, however slow a shared machine is; false only after a minute.
template <typename Pred>
bool Eventually(CommThread* thread, Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    thread->Poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// What a test expects the thread not to do: it gets many chances (a progress thread polling
// every 50-800 us acts dozens of times; an unthreaded one is polled). On a loaded machine it may
// get fewer, which can only let the check pass, never fail it falsely.
void LetItRun(CommThread* thread) {
  for (int i = 0; i < 5; ++i) {
    thread->Poll();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TEST(CommThread, BackgroundTasksWaitForAnUrgentTask) {
  for (bool threaded : {true, false}) {
    SelfCommunicator a, b;
    CommThread thread(threaded);
    GatedTask urgent(&a, /*background=*/false, 1), bucket(&b, /*background=*/true, 2);
    thread.Submit(&urgent);
    thread.Submit(&bucket);
    ASSERT_TRUE(Eventually(&thread, [&] { return urgent.issued.load() == 1; }));
    LetItRun(&thread);
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
    SelfCommunicator b;
    CommThread thread(threaded);
    GatedTask bucket(&b, /*background=*/true, 2), later(&b, /*background=*/true, 1);
    bucket.release = later.release = true;
    {
      CommThread::UrgentScope scope(&thread);
      thread.Submit(&bucket);
      thread.Submit(&later);
      LetItRun(&thread);
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
  SelfCommunicator a, b;
  CommThread thread(true);
  GatedTask bucket(&b, /*background=*/true, 2), urgent(&a, /*background=*/false, 1);
  thread.Submit(&bucket);
  ASSERT_TRUE(Eventually(&thread, [&] { return bucket.issued.load() == 1; }));
  thread.Submit(&urgent);
  ASSERT_TRUE(Eventually(&thread, [&] { return urgent.issued.load() == 1; }));
  bucket.release = true;  // its first stage completes while the urgent one is in flight
  LetItRun(&thread);
  EXPECT_EQ(bucket.issued.load(), 1);
  urgent.release = true;
  thread.WaitAll();
  EXPECT_EQ(bucket.issued.load(), 2);
}

}  // namespace
}  // namespace openmoe
