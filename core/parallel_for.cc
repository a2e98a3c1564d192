#include "core/parallel_for.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "core/gemm.h"

namespace openmoe {
namespace {

thread_local bool inside_parallel_for = false;

// One job at a time: ranges of `chunk` indices handed out by `next`. `helpers_in` counts the
// helpers that joined (under the pool's mutex, while the job was still offered) and have not left:
// the caller waits for those only, never for a helper that was not scheduled in time.
struct Job {
  absl::FunctionRef<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0, chunk = 1;
  std::atomic<int64_t> next{0};
  std::atomic<int> helpers_in{0};
};

void RunRanges(Job* job) {
  inside_parallel_for = true;
  for (int64_t begin = job->next.fetch_add(job->chunk); begin < job->n;
       begin = job->next.fetch_add(job->chunk))
    (*job->fn)(begin, std::min(job->n, begin + job->chunk));
  inside_parallel_for = false;
}

class Pool {
 public:
  void Run(int helpers, Job* job) {
    std::lock_guard<std::mutex> serial(call_mu_);
    Grow(helpers);
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = job;
      wanted_ = helpers;
      ++generation_;
    }
    wake_.notify_all();
    RunRanges(job);
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = nullptr;  // withdrawn: no helper joins from now on
    }
    while (job->helpers_in.load(std::memory_order_acquire) > 0) std::this_thread::yield();
  }

 private:
  void Grow(int helpers) {
    while (static_cast<int>(threads_.size()) < helpers) {
      const int index = static_cast<int>(threads_.size());
      threads_.emplace_back([this, index] { Loop(index); });
      threads_.back().detach();  // lives as long as the process
    }
  }

  void Loop(int index) {
    int64_t seen = 0;
    for (;;) {
      Job* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (job_ == nullptr || index >= wanted_) continue;
        job = job_;
        job->helpers_in.fetch_add(1, std::memory_order_relaxed);
      }
      RunRanges(job);
      job->helpers_in.fetch_sub(1, std::memory_order_release);
    }
  }

  std::mutex call_mu_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::thread> threads_;
  Job* job_ = nullptr;
  int wanted_ = 0;
  int64_t generation_ = 0;
};

Pool& ThePool() {
  static Pool* pool = new Pool;  // never destroyed: its threads outlive static destruction
  return *pool;
}

}  // namespace

void ParallelFor(int64_t n, int64_t min_chunk, absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(min_chunk, 1);
  const int64_t threads = inside_parallel_for ? 1 : std::min<int64_t>(GemmThreads(), n / min_chunk);
  if (threads <= 1) {
    fn(0, n);
    return;
  }
  // A few ranges per thread, so a late helper leaves little for the caller to wait on.
  Job job;
  job.fn = &fn;
  job.n = n;
  job.chunk = std::max(min_chunk, (n + 4 * threads - 1) / (4 * threads));
  ThePool().Run(static_cast<int>(threads) - 1, &job);
}

}  // namespace openmoe
