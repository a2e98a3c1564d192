#include "parallel/cost/torus_footprint.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/check.h"

namespace openmoe {
namespace {

// The footprint of one dimension from the distinct coordinates the group has along it.
FootprintDim DimOf(const std::set<int64_t>& coords, int64_t extent, bool wraparound, bool* exact) {
  FootprintDim d;
  d.size = static_cast<int64_t>(coords.size());
  if (d.size < 2) return d;
  const int64_t first = *coords.begin(), last = *coords.rbegin();
  d.stride = *std::next(coords.begin()) - first;
  int64_t expected = first;
  for (int64_t c : coords) {
    if (c != expected) {
      // Not evenly spaced: the bounding range, contiguous.
      *exact = false;
      d.stride = 1;
      d.size = last - first + 1;
      break;
    }
    expected += d.stride;
  }
  d.ring = wraparound && extent > 2 && d.size * d.stride == extent;
  return d;
}

}  // namespace

TorusShape TorusOf(const Mesh& mesh, bool wraparound) {
  TorusShape t;
  t.wraparound = wraparound;
  if (mesh.torus_x > 0 && mesh.torus_y > 0 && mesh.torus_x * mesh.torus_y == mesh.num_chips) {
    t.x = mesh.torus_x;
    t.y = mesh.torus_y;
  } else {
    t.x = std::max<int64_t>(1, mesh.num_chips);
    t.y = 1;
  }
  return t;
}

double Footprint::RingLinks(int d) const {
  const FootprintDim& f = dim[d];
  if (f.size < 2) return 0;
  return (f.ring ? 2.0 : 1.0) / static_cast<double>(f.stride);
}

double Footprint::BisectionLinks() const {
  double best = 0;
  bool any = false;
  for (int d = 0; d < 2; ++d) {
    if (dim[d].size < 2) continue;
    const double cut = static_cast<double>(dim[1 - d].size) * RingLinks(d);
    best = any ? std::min(best, cut) : cut;
    any = true;
  }
  return best;
}

double Footprint::InjectionLinks() const { return RingLinks(0) + RingLinks(1); }

int64_t Footprint::DiameterHops() const {
  int64_t hops = 0;
  for (const FootprintDim& f : dim) {
    if (f.size < 2) continue;
    hops += (f.ring ? f.size / 2 : f.size - 1) * f.stride;
  }
  return hops;
}

std::string Footprint::Describe() const {
  if (Chips() == 1) return "1 chip";
  std::string s = absl::StrFormat("%dx%d (", dim[0].size, dim[1].size);
  bool first = true;
  for (int d = 0; d < 2; ++d) {
    if (dim[d].size < 2) continue;
    absl::StrAppend(&s, first ? "" : ", ", d == 0 ? "x " : "y ", dim[d].ring ? "ring" : "line");
    if (dim[d].stride > 1) absl::StrAppend(&s, " stride ", dim[d].stride);
    first = false;
  }
  s += exact ? ")" : ", approximate)";
  return s;
}

Footprint FootprintOf(const TorusShape& torus, const std::vector<int64_t>& chips) {
  OPENMOE_CHECK(torus.x >= 1 && torus.y >= 1);
  std::set<int64_t> xs, ys, distinct;
  for (int64_t c : chips) {
    OPENMOE_CHECK_MSG(c >= 0 && c < torus.x * torus.y, "chip %lld outside the %lldx%lld torus",
                      static_cast<long long>(c), static_cast<long long>(torus.x),
                      static_cast<long long>(torus.y));
    xs.insert(c % torus.x);
    ys.insert(c / torus.x);
    distinct.insert(c);
  }
  Footprint f;
  f.dim[0] = DimOf(xs, torus.x, torus.wraparound, &f.exact);
  f.dim[1] = DimOf(ys, torus.y, torus.wraparound, &f.exact);
  // A lattice holds every (x, y) combination of its coordinates.
  if (static_cast<int64_t>(distinct.size()) != static_cast<int64_t>(xs.size() * ys.size())) {
    f.exact = false;
  }
  return f;
}

std::vector<int64_t> ExpertGroupChips(const Mesh& mesh, int64_t group) {
  const int64_t ep = std::max<int64_t>(1, mesh.expert_parallel);
  const int64_t mp = std::max<int64_t>(1, mesh.model_parallel);
  std::vector<int64_t> chips;
  for (int64_t j = 0; j < ep; ++j) chips.push_back((group * ep + j) * mp);
  return chips;
}

std::vector<int64_t> ExpertReplicaChips(const Mesh& mesh, int64_t slot) {
  const int64_t ep = std::max<int64_t>(1, mesh.expert_parallel);
  const int64_t mp = std::max<int64_t>(1, mesh.model_parallel);
  std::vector<int64_t> chips;
  for (int64_t s = slot; s < mesh.num_chips / mp; s += ep) chips.push_back(s * mp);
  return chips;
}

std::vector<int64_t> ModelGroupChips(const Mesh& mesh, int64_t shard) {
  const int64_t mp = std::max<int64_t>(1, mesh.model_parallel);
  std::vector<int64_t> chips;
  for (int64_t m = 0; m < mp; ++m) chips.push_back(shard * mp + m);
  return chips;
}

std::vector<int64_t> ModelPeerChips(const Mesh& mesh, int64_t model_coord) {
  const int64_t mp = std::max<int64_t>(1, mesh.model_parallel);
  std::vector<int64_t> chips;
  for (int64_t c = model_coord; c < mesh.num_chips; c += mp) chips.push_back(c);
  return chips;
}

std::vector<int64_t> AllChips(const Mesh& mesh) {
  std::vector<int64_t> chips;
  for (int64_t c = 0; c < mesh.num_chips; ++c) chips.push_back(c);
  return chips;
}

}  // namespace openmoe
