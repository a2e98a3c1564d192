#include "parallel/cost/collective_cost.h"

#include <algorithm>

#include "core/check.h"

namespace openmoe {

double RingAllReduceSeconds(const Footprint& f, int d, double bytes, const LinkParams& link) {
  OPENMOE_CHECK(d == 0 || d == 1);
  OPENMOE_CHECK(link.bandwidth > 0 && link.hop_latency >= 0);
  const FootprintDim& dim = f.dim[d];
  if (dim.size < 2) return 0;
  const double n = static_cast<double>(dim.size);
  const double bandwidth_term = 2 * (n - 1) / n * bytes / (f.RingLinks(d) * link.bandwidth);
  const double latency_term = 2 * (n - 1) * static_cast<double>(dim.stride) * link.hop_latency;
  return bandwidth_term + latency_term;
}

double AllReduceSeconds(const Footprint& f, double bytes, const LinkParams& link) {
  OPENMOE_CHECK(link.bandwidth > 0 && link.hop_latency >= 0);
  // c_i: one ring all-reduce of the whole buffer along dimension i (bandwidth term); n_i chips.
  double c[2] = {0, 0}, n[2] = {1, 1}, latency = 0;
  for (int d = 0; d < 2; ++d) {
    const FootprintDim& dim = f.dim[d];
    if (dim.size < 2) continue;
    n[d] = static_cast<double>(dim.size);
    c[d] = 2 * (n[d] - 1) / n[d] * bytes / (f.RingLinks(d) * link.bandwidth);
    latency += 2 * (n[d] - 1) * static_cast<double>(dim.stride) * link.hop_latency;
  }
  // A fraction x of the buffer goes x first, 1 - x goes y first, both at once.
  auto slowest = [&](double x) {
    return std::max(c[0] * (x + (1 - x) / n[1]), c[1] * ((1 - x) + x / n[0]));
  };
  double best = std::min(slowest(0), slowest(1));
  const double denominator = c[0] * (1 - 1 / n[1]) + c[1] * (1 - 1 / n[0]);
  if (denominator > 0) {
    const double balanced = (c[1] - c[0] / n[1]) / denominator;
    if (balanced > 0 && balanced < 1) best = std::min(best, slowest(balanced));
  }
  return best + latency;
}

double AllToAllSeconds(const Footprint& f, double bytes, const LinkParams& link) {
  OPENMOE_CHECK(link.bandwidth > 0 && link.hop_latency >= 0);
  const double n = static_cast<double>(f.Chips());
  if (n < 2) return 0;
  const double bisection = n * bytes / 4 / (f.BisectionLinks() * link.bandwidth);
  const double injection = (n - 1) / n * bytes / (f.InjectionLinks() * link.bandwidth);
  return std::max(bisection, injection) + static_cast<double>(f.DiameterHops()) * link.hop_latency;
}

}  // namespace openmoe
