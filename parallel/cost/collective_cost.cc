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
  auto ordered = [&](int first) {
    const int second = 1 - first;
    return RingAllReduceSeconds(f, first, bytes, link) +
           RingAllReduceSeconds(f, second, bytes / static_cast<double>(f.dim[first].size), link);
  };
  return std::min(ordered(0), ordered(1));
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
