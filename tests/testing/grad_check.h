// Finite-difference gradient checks for hand-written backwards, in fp32 with double accumulation.
//
// A check compares the analytic gradient with central differences (f(x + h e) - f(x - h e)) / 2h
//   - on `coords` randomly chosen single coordinates, and
//   - along one random direction over all of x (a directional derivative), which catches errors
//     spread thinly over many entries.
// Tolerance: |fd - an| <= atol + rtol * max(|fd|, |an|). With h = 1e-2 on O(1) inputs the fp32
// rounding of f (evaluated in double from fp32 activations, ~1e-7 relative) contributes
// ~1e-7 * |f| / h to fd, and truncation O(h^2 * f''') ~ 1e-4; rtol 1e-2 and atol 1e-3 sit an
// order of magnitude above both, while a wrong backward is off by O(1).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "gtest/gtest.h"

namespace openmoe::testing {

struct GradCheckOptions {
  double step = 1e-2;
  double rtol = 1e-2;
  double atol = 1e-3;
  int coords = 24;
  uint64_t seed = 7;
};

// f: evaluates the scalar loss at the current contents of x (it must read x each call).
// x: (n) the input, perturbed in place and restored. grad: (n) the analytic d f / d x.
inline void ExpectGradientMatches(const std::string& what, const std::function<double()>& f,
                                  float* x, int64_t n, const float* grad,
                                  const GradCheckOptions& opt = {}) {
  const CounterRng rng(opt.seed, StreamId(what));
  auto central = [&](const std::vector<float>& direction) {
    std::vector<float> saved(x, x + n);
    for (int64_t i = 0; i < n; ++i) x[i] = saved[i] + static_cast<float>(opt.step) * direction[i];
    const double plus = f();
    for (int64_t i = 0; i < n; ++i) x[i] = saved[i] - static_cast<float>(opt.step) * direction[i];
    const double minus = f();
    for (int64_t i = 0; i < n; ++i) x[i] = saved[i];
    // The realised step may differ from h * direction by fp32 rounding; divide by what was applied.
    return (plus - minus) / (2.0 * opt.step);
  };
  const int coords = static_cast<int>(std::min<int64_t>(opt.coords, n));
  for (int c = 0; c < coords; ++c) {
    const int64_t i = coords == n ? c : static_cast<int64_t>(rng.UniformInt(c, n));
    const float saved = x[i];
    x[i] = saved + static_cast<float>(opt.step);
    const double plus = f();
    x[i] = saved - static_cast<float>(opt.step);
    const double minus = f();
    x[i] = saved;
    const double fd = (plus - minus) / (2.0 * opt.step);
    const double an = grad[i];
    EXPECT_LE(std::fabs(fd - an), opt.atol + opt.rtol * std::max(std::fabs(fd), std::fabs(an)))
        << what << " coordinate " << i << ": finite difference " << fd << " vs analytic " << an;
  }
  std::vector<float> direction(n);
  double an = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    direction[i] = static_cast<float>(rng.Normal(1000003 + i));
    an += static_cast<double>(direction[i]) * grad[i];
  }
  const double fd = central(direction);
  EXPECT_LE(std::fabs(fd - an), opt.atol + opt.rtol * std::max(std::fabs(fd), std::fabs(an)))
      << what << " random direction: finite difference " << fd << " vs analytic " << an;
}

// Fills v (n) with N(0, scale^2) values from a counter RNG.
inline void FillNormal(float* v, int64_t n, double scale, uint64_t seed) {
  const CounterRng rng(seed, 0);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(scale * rng.Normal(i));
}

}  // namespace openmoe::testing
