#include "launch/memory_account.h"

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "launch/memory_check.h"

namespace openmoe {

int64_t PeakRssBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // kB
  }
  return 0;
}

MemoryAccount AccountMemory(Trainer& trainer) {
  MemoryAccount a;
  a.params = trainer.params().capacity_bytes();
  a.grads = trainer.grads().capacity_bytes();
  a.optimizer = trainer.optimizer().state().capacity_bytes();
  a.activations = trainer.decoder().memory();
  if (trainer.runner() != nullptr) a.communication = trainer.runner()->held_bytes();
  a.communication += trainer.grad_reducer().held_bytes();  // the gradient buckets' buffers
  a.peak_rss = PeakRssBytes();
  Communicator& world = trainer.world();
  std::vector<int64_t> peaks(world.size(), 0);
  peaks[world.rank()] = a.peak_rss;
  world.AllReduceSum(peaks.data(), static_cast<int64_t>(peaks.size()));
  a.peak_rss_max = *std::max_element(peaks.begin(), peaks.end());
  RankMemoryEstimate e;
  if (EstimateRankMemory(trainer.spec(), trainer.world().size(), trainer.world().rank(), &e)
          .ok()) {
    a.estimate = e.total_bytes;
  }
  const TrainConfig& t = trainer.spec().train();
  a.chips_per_rank = trainer.mesh().chips_per_rank;
  a.tokens = t.batch_rows() * t.seq_len() / std::max<int64_t>(1, trainer.mesh().NumShards()) *
             trainer.mesh().ShardsPerRank() / std::max<int64_t>(1, t.microbatches());
  return a;
}

namespace {
double MiB(double bytes) { return bytes / (1024.0 * 1024.0); }
}  // namespace

std::string MemoryAccountText(const MemoryAccount& a) {
  const Decoder::Memory& m = a.activations;
  const double per_token = a.tokens > 0 ? 1.0 / static_cast<double>(a.tokens) : 0.0;
  return absl::StrFormat(
      "memory of rank 0 after a step (MiB): parameters %.1f, gradients %.1f, optimizer %.1f | "
      "saved activations %.1f (%.0f bytes/token: residual %.1f, attention %.1f, ffn %.1f, moe "
      "%.1f) | scratch %.1f | communication %.1f | other %.1f | peak RSS %.1f (max over ranks "
      "%.1f), estimated %.1f",
      MiB(a.params), MiB(a.grads), MiB(a.optimizer), MiB(m.saved()), m.saved() * per_token,
      MiB(m.residual), MiB(m.attention), MiB(m.ffn), MiB(m.moe), MiB(m.scratch),
      MiB(a.communication), MiB(static_cast<double>(a.peak_rss - a.accounted())),
      MiB(a.peak_rss), MiB(a.peak_rss_max), MiB(a.estimate));
}

std::string MemoryAccountJson(const MemoryAccount& a) {
  const Decoder::Memory& m = a.activations;
  return absl::StrFormat(
      "{\"params\": %d, \"grads\": %d, \"optimizer\": %d, \"activations\": {\"residual\": %d, "
      "\"attention\": %d, \"ffn\": %d, \"moe\": %d}, \"scratch\": %d, \"communication\": %d, "
      "\"other\": %d, \"peak_rss\": %d, \"peak_rss_max_over_ranks\": %d, \"estimate\": %.0f, "
      "\"tokens_per_microbatch\": %d, \"chips_per_rank\": %d}",
      a.params, a.grads, a.optimizer, m.residual, m.attention, m.ffn, m.moe, m.scratch,
      a.communication, a.peak_rss - a.accounted(), a.peak_rss, a.peak_rss_max, a.estimate,
      a.tokens, a.chips_per_rank);
}

}  // namespace openmoe
