#include "model/losses.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "core/check.h"
#include "core/kernels.h"
#include "core/parallel_for.h"

namespace openmoe {
namespace {

// max_i x[i] with independent partial maxima, for the same reason as LaneSum.  x: (n)
float RowMax(const float* x, int64_t n) {
  constexpr int kLanes = 16;
  float acc[kLanes];
  std::fill_n(acc, kLanes, -std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] = std::max(acc[k], x[i + k]);
  float m = -std::numeric_limits<float>::infinity();
  for (; i < n; ++i) m = std::max(m, x[i]);
  for (int k = 0; k < kLanes; ++k) m = std::max(m, acc[k]);
  return m;
}

}  // namespace

LmLossSums LmLossForwardBackward(const float* logits, const int32_t* targets, const float* weights,
                                 int64_t tokens, int64_t vocab, double z_weight, double normalizer,
                                 float* dlogits) {
  for (int64_t t = 0; t < tokens; ++t) {
    OPENMOE_CHECK_MSG(targets[t] >= 0 && targets[t] < vocab,
                      "token %lld: target %d is outside [0, %lld)", static_cast<long long>(t),
                      targets[t], static_cast<long long>(vocab));
  }
  // Rows run on the GEMM threads; each row's log-sum-exp and hit are kept, and the sums are taken
  // afterwards in token order, so they do not depend on the thread count.
  std::vector<double> lse_of(tokens, 0.0), target_logit(tokens, 0.0);
  std::vector<char> hit(tokens, 0);
  ParallelFor(tokens, std::max<int64_t>(1, 65536 / std::max<int64_t>(vocab, 1)),
              [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* x = logits + t * vocab;  // (V)
      float* d = dlogits + t * vocab;       // (V), possibly x itself
      const int32_t y = targets[t];
      const double w = weights[t];
      if (w == 0.0) {
        std::fill_n(d, vocab, 0.0f);
        continue;
      }
      const float max = RowMax(x, vocab);
      const float x_y = x[y];  // read before d overwrites it
      // argmax takes the first maximal index, so a tie before the target is not a hit.
      hit[t] = x_y == max && std::find(x, x + y, max) == x + y;

      // d <- e^(x - max), then its sum in double (log Z stays accurate at V in the hundreds of
      // thousands). Two loops, not one: d may alias x, and only a plain loop gets the runtime
      // alias check that lets it vectorise; the row is still in cache for the second.
      for (int64_t j = 0; j < vocab; ++j) d[j] = ExpNonPositive(x[j] - max);
      const double sum = LaneSum(vocab, [d](int64_t j) { return static_cast<double>(d[j]); });
      const double lse = max + std::log(sum);
      lse_of[t] = lse;
      target_logit[t] = x_y;

      // d/dx of c * (lse - x_y + z_weight * lse^2) = c * ((1 + 2 z_weight lse) p - onehot(y)),
      // with c = normalizer * w and p = e / sum.
      const double c = normalizer * w;
      const double p_scale = 1.0 + 2.0 * z_weight * lse;
      const double p_y = d[y] / sum;
      const float scale = static_cast<float>(c * p_scale / sum);
      for (int64_t j = 0; j < vocab; ++j) d[j] *= scale;
      // In double: c * p - c would cancel in float when p_y is near 1.
      d[y] = static_cast<float>(c * (p_scale * p_y - 1.0));
    }
  });
  LmLossSums sums;
  for (int64_t t = 0; t < tokens; ++t) {
    const double w = weights[t];
    if (w == 0.0) continue;
    sums.cross_entropy += w * (lse_of[t] - target_logit[t]);
    sums.z_loss += w * lse_of[t] * lse_of[t];
    sums.weight += w;
    sums.correct += hit[t] ? 1 : 0;
  }
  return sums;
}

LmLossSums VocabParallelLmLossForwardBackward(const float* logits, const int32_t* targets,
                                              const float* weights, int64_t tokens,
                                              int64_t local_vocab, int64_t vocab_begin,
                                              int64_t vocab, double z_weight, double normalizer,
                                              Communicator* comm, float* dlogits) {
  const int64_t lv = local_vocab, vb = vocab_begin;
  // Pass 1: every row's maximum over the whole vocabulary.
  std::vector<float> max(tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t y = targets[t];
    OPENMOE_CHECK_MSG(y >= 0 && y < vocab, "token %lld: target %d is outside [0, %lld)",
                      static_cast<long long>(t), y, static_cast<long long>(vocab));
    max[t] = weights[t] == 0.0f ? 0.0f : RowMax(logits + t * lv, lv);
  }
  comm->AllReduceMax(max.data(), tokens);

  // Pass 2: per row, this piece's sum of e^(x - max), the target logit (owned by one piece) and a
  // miss count: 1 from the owner when the target is not a maximum, plus every maximum before the
  // target (argmax takes the first maximal index), so a row is correct iff the sum is 0.
  std::vector<double> partial(3 * tokens, 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* x = logits + t * lv;
    float* d = dlogits + t * lv;
    if (weights[t] == 0.0f) {
      std::fill_n(d, lv, 0.0f);
      continue;
    }
    const float m = max[t];
    const int64_t y = targets[t] - vb;  // local column of the target, possibly outside [0, lv)
    int64_t misses = 0;
    if (y >= 0 && y < lv) {
      partial[3 * t + 1] = x[y];
      misses = x[y] == m ? 0 : 1;
    }
    const int64_t before = std::clamp<int64_t>(y, 0, lv);  // local columns before the target
    misses += std::count(x, x + before, m);
    partial[3 * t + 2] = static_cast<double>(misses);
    // Two loops, as in the whole form: d may alias x.
    for (int64_t j = 0; j < lv; ++j) d[j] = ExpNonPositive(x[j] - m);
    partial[3 * t] = LaneSum(lv, [d](int64_t j) { return static_cast<double>(d[j]); });
  }
  comm->AllReduceSum(partial.data(), 3 * tokens);

  // Pass 3: the sums and this piece's gradient columns, as the whole form computes them.
  LmLossSums sums;
  for (int64_t t = 0; t < tokens; ++t) {
    const double w = weights[t];
    if (w == 0.0) continue;
    float* d = dlogits + t * lv;
    const double sum = partial[3 * t], x_y = partial[3 * t + 1];
    const double lse = max[t] + std::log(sum);
    sums.cross_entropy += w * (lse - x_y);
    sums.z_loss += w * lse * lse;
    sums.weight += w;
    sums.correct += partial[3 * t + 2] == 0.0 ? 1 : 0;
    const double c = normalizer * w;
    const double p_scale = 1.0 + 2.0 * z_weight * lse;
    const int64_t y = targets[t] - vb;
    const bool owner = y >= 0 && y < lv;
    const double p_y = owner ? d[y] / sum : 0.0;
    const float scale = static_cast<float>(c * p_scale / sum);
    for (int64_t j = 0; j < lv; ++j) d[j] *= scale;
    if (owner) d[y] = static_cast<float>(c * (p_scale * p_y - 1.0));
  }
  return sums;
}

}  // namespace openmoe
