#include "launch/checkpoint/threads.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "core/gemm.h"

namespace openmoe {

absl::Status ForEachInParallel(int64_t n, int threads,
                               const std::function<absl::Status(int64_t)>& fn) {
  std::vector<absl::Status> results(static_cast<size_t>(n));
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t i = next++; i < n; i = next++) results[i] = fn(i);
  };
  const int64_t helpers = std::max<int64_t>(0, std::min<int64_t>(threads, n) - 1);
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < helpers; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  for (const absl::Status& s : results)
    if (!s.ok()) return s;
  return absl::OkStatus();
}

int CheckpointThreads() { return std::max(1, GemmThreads()); }

}  // namespace openmoe
