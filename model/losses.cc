#include "model/losses.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "core/check.h"
#include "core/kernels.h"

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

// e^x for x <= 0 in plain float arithmetic, within about 1 ulp: Cephes' expf, x = n ln2 + r with
// |r| <= ln2 / 2, a polynomial for e^r and 2^n built from exponent bits. std::exp is a libm call
// the compiler cannot vectorise without -ffast-math, and this runs on every logit of every step.
inline float ExpNonPositive(float x_in) {
  // Clamping keeps 2^n a normal float. Below the clamp (e^-87 = 1.6e-38) the result is 0, where
  // std::exp gives a denormal: either is nothing next to a row sum that is >= 1.
  constexpr float kMin = -87.0f;
  const float x = std::max(x_in, kMin);
  // Round to nearest by adding and removing 1.5 * 2^23 (std::nearbyint would not vectorise).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln 2 in two parts
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const float e = y * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return x_in < kMin ? 0.0f : e;
}

}  // namespace

LmLossSums LmLossForwardBackward(const float* logits, const int32_t* targets, const float* weights,
                                 int64_t tokens, int64_t vocab, double z_weight, double normalizer,
                                 float* dlogits) {
  LmLossSums sums;
  for (int64_t t = 0; t < tokens; ++t) {
    const float* x = logits + t * vocab;  // (V)
    float* d = dlogits + t * vocab;       // (V), possibly x itself
    const int32_t y = targets[t];
    OPENMOE_CHECK_MSG(y >= 0 && y < vocab, "token %lld: target %d is outside [0, %lld)",
                      static_cast<long long>(t), y, static_cast<long long>(vocab));
    const double w = weights[t];
    if (w == 0.0) {
      std::fill_n(d, vocab, 0.0f);
      continue;
    }
    const float max = RowMax(x, vocab);
    const float x_y = x[y];  // read before d overwrites it
    // argmax takes the first maximal index, so a tie before the target is not a hit.
    const bool correct = x_y == max && std::find(x, x + y, max) == x + y;

    // d <- e^(x - max), then its sum in double (log Z stays accurate at V in the hundreds of
    // thousands). Two loops, not one: d may alias x, and only a plain loop gets the runtime alias
    // check that lets it vectorise; the row is still in cache for the second.
    for (int64_t j = 0; j < vocab; ++j) d[j] = ExpNonPositive(x[j] - max);
    const double sum = LaneSum(vocab, [d](int64_t j) { return static_cast<double>(d[j]); });
    const double lse = max + std::log(sum);
    sums.cross_entropy += w * (lse - x_y);
    sums.z_loss += w * lse * lse;
    sums.weight += w;
    sums.correct += correct ? 1 : 0;

    // d/dx of c * (lse - x_y + z_weight * lse^2) = c * ((1 + 2 z_weight lse) p - onehot(y)), with
    // c = normalizer * w and p = e / sum.
    const double c = normalizer * w;
    const double p_scale = 1.0 + 2.0 * z_weight * lse;
    const double p_y = d[y] / sum;
    const float scale = static_cast<float>(c * p_scale / sum);
    for (int64_t j = 0; j < vocab; ++j) d[j] *= scale;
    // In double: c * p - c would cancel in float when p_y is near 1.
    d[y] = static_cast<float>(c * (p_scale * p_y - 1.0));
  }
  return sums;
}

}  // namespace openmoe
