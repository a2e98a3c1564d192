#include "data/synthetic.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/rng.h"

namespace openmoe {

namespace {
constexpr uint64_t kStartStream = 1;
constexpr uint64_t kStepStream = 2;
}  // namespace

SyntheticMarkovSource::SyntheticMarkovSource(int64_t vocab_size, int64_t branching, uint64_t seed)
    : vocab_size_(vocab_size), branching_(std::max<int64_t>(1, std::min(branching, vocab_size))),
      seed_(seed) {
  OPENMOE_CHECK(vocab_size >= 2);
  const CounterRng table_rng(seed, StreamId("markov.successors"));
  successors_.resize(vocab_size_ * branching_);
  for (int64_t i = 0; i < vocab_size_ * branching_; ++i)
    successors_[i] = static_cast<int32_t>(table_rng.UniformInt(i, vocab_size_));
  // Probabilities proportional to 1/(j+1)^2: skewed, so the chain is easy but not trivial.
  std::vector<double> p(branching_);
  double sum = 0;
  for (int64_t j = 0; j < branching_; ++j) sum += p[j] = 1.0 / ((j + 1.0) * (j + 1.0));
  double acc = 0;
  cumulative_.resize(branching_);
  for (int64_t j = 0; j < branching_; ++j) cumulative_[j] = (acc += p[j] / sum);
  cumulative_.back() = 1.0;
}

int32_t SyntheticMarkovSource::Next(int32_t token, uint64_t row, int64_t position) const {
  const CounterRng rng(seed_, CounterRng::Mix(row) ^ kStepStream);
  const double u = rng.Uniform(static_cast<uint64_t>(position));
  const int64_t j = std::lower_bound(cumulative_.begin(), cumulative_.end(), u) - cumulative_.begin();
  return successors_[token * branching_ + std::min(j, branching_ - 1)];
}

void SyntheticMarkovSource::FillRows(int64_t first_row, int64_t rows, int64_t seq_len,
                                     Batch* batch) const {
  batch->Resize(rows, seq_len);
  const CounterRng start_rng(seed_, kStartStream);
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t row = static_cast<uint64_t>(first_row + r);
    int32_t token = static_cast<int32_t>(start_rng.UniformInt(row, vocab_size_));
    for (int64_t s = 0; s < seq_len; ++s) {
      const int64_t i = r * seq_len + s;
      const int32_t next = Next(token, row, s);
      batch->tokens[i] = token;
      batch->targets[i] = next;
      batch->loss_weights[i] = 1.0f;
      batch->segment_ids[i] = 1;
      token = next;
    }
  }
}

namespace {
// A long sample of the chain, for stationary statistics.
Batch StationarySample(const SyntheticMarkovSource& source, int64_t vocab_size) {
  Batch sample;
  source.FillRows(int64_t{1} << 40, 64, std::max<int64_t>(256, vocab_size), &sample);
  return sample;
}
}  // namespace

double SyntheticMarkovSource::ConditionalEntropy() const {
  // H(next | token) per token (successor ids may collide: merge their probabilities), averaged
  // over a long sample of the chain, i.e. under its stationary distribution.
  std::vector<double> h(vocab_size_, 0.0);
  for (int64_t v = 0; v < vocab_size_; ++v) {
    std::vector<std::pair<int32_t, double>> probs;
    double prev = 0;
    for (int64_t j = 0; j < branching_; ++j) {
      const double p = cumulative_[j] - prev;
      prev = cumulative_[j];
      const int32_t s = successors_[v * branching_ + j];
      auto it = std::find_if(probs.begin(), probs.end(), [&](auto& e) { return e.first == s; });
      if (it == probs.end()) probs.push_back({s, p}); else it->second += p;
    }
    for (auto& [s, p] : probs) h[v] -= p * std::log(p);
  }
  const Batch sample = StationarySample(*this, vocab_size_);
  double total = 0;
  for (int32_t t : sample.tokens) total += h[t];
  return total / static_cast<double>(sample.tokens.size());
}

double SyntheticMarkovSource::UnigramEntropy() const {
  const Batch sample = StationarySample(*this, vocab_size_);
  std::vector<double> counts(vocab_size_, 0.0);
  for (int32_t t : sample.targets) counts[t] += 1;
  double h = 0;
  const double n = static_cast<double>(sample.targets.size());
  for (double c : counts)
    if (c > 0) h -= (c / n) * std::log(c / n);
  return h;
}

}  // namespace openmoe
