// Where a group of chips sits on the 2D torus of a TPU slice, for the cost model.
//
// Chips are laid out row-major (parallel/mesh.h): chip c sits at (x, y) = (c % X, c / X) on an
// X x Y torus. A group's footprint is the lattice its chips form: along each torus dimension the
// number of distinct coordinates (size), the physical hops between consecutive ones (stride) and
// whether they close a ring through the wraparound link (ring: size * stride == the dimension's
// extent, the slice has wraparound links, and the extent is > 2). Examples on an 8x8 torus:
//   - expert group of 8 chips (ep = 8): one row, 8x1, x ring;
//   - expert group of 16 chips: two rows, 8x2, x ring, y line (2 of 8 rows: no wraparound);
//   - expert group of 4 chips: half a row, 4x1, x line;
//   - the replicas of one expert with ep = 4 (chips j + 4g): 2x8, x stride 4 (ring), y ring;
//   - the replicas with ep = 16 (chips j + 16g): 1x4, y stride 2 (ring);
//   - every chip: 8x8, both rings;
//   - with model_parallel 2, a model group: 2x1, x line; the shared-gradient group of model coord
//     0 (chips 0, 2, 4, ...): 4x8, x ring stride 2, y ring.
// Groups of one kind (every expert group, every replica set) are translates of each other and run
// their collectives at the same time. Along a dimension with stride s, s translates interleave on
// the same physical links, so one group gets 1/s of each link's bandwidth there.
//
// Link counts used by the collective formulas (parallel/cost/collective_cost.h), per dimension i with
// size n_i >= 2, for one group:
//   ring links      r_i = (ring_i ? 2 : 1) / s_i   (a line carries one ring per direction pair)
//   bisection cut   b_i = (prod_{j != i} n_j) * (ring_i ? 2 : 1) / s_i   links per direction
//   bisection       min_i b_i
//   diameter        sum_i (ring_i ? floor(n_i / 2) : n_i - 1) * s_i   hops
// A chip set that is not a full lattice (an expert group of 12 chips on 8-wide rows) is
// approximated by its bounding lattice and flagged `exact = false`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/mesh.h"

namespace openmoe {

struct TorusShape {
  int64_t x = 1, y = 1;  // chips along each dimension; x is the row (consecutive chips)
  bool wraparound = true;
};

// The slice's torus. A spec without a 2D shape (torus 0x0, one chip) becomes num_chips x 1.
TorusShape TorusOf(const Mesh& mesh, bool wraparound);

struct FootprintDim {
  int64_t size = 1;    // distinct coordinates along this dimension
  int64_t stride = 1;  // hops between consecutive coordinates
  bool ring = false;   // closes through the wraparound link
};

struct Footprint {
  FootprintDim dim[2];  // [0]: x, [1]: y
  bool exact = true;

  int64_t Chips() const { return dim[0].size * dim[1].size; }
  double RingLinks(int d) const;  // r_d above (0 when size < 2)
  double BisectionLinks() const;  // min_i b_i (0 for a single chip)
  double InjectionLinks() const;  // sum_i r_i: links one chip sends on inside the group
  int64_t DiameterHops() const;
  // "8x2 (x ring, y line)", "2x8 (x ring stride 4, y ring)", "1 chip".
  std::string Describe() const;
};

// The footprint of an explicit set of chips (chip ids as in parallel/mesh.h).
Footprint FootprintOf(const TorusShape& torus, const std::vector<int64_t>& chips);

// The groups below follow the mesh's axis order (parallel/mesh.h: model innermost, chip
// c = (data * ep + expert) * mp + model). With model_parallel mp = 1 the shards are the chips.
// The expert-axis groups are given at model coord 0; the groups at other model coords are their
// translates by one chip in x, so they share no link with them.
//
// Chips of expert group g at model coord 0: shards [g * ep, (g + 1) * ep), i.e. chips
// (g * ep + j) * mp, j < ep (consecutive for mp = 1, stride mp otherwise).
std::vector<int64_t> ExpertGroupChips(const Mesh& mesh, int64_t group);
// Chips holding the experts of slot j of every group at model coord 0 (the replicas of those
// expert pieces): (j + g * ep) * mp.
std::vector<int64_t> ExpertReplicaChips(const Mesh& mesh, int64_t slot);
// Chips of the model group of shard s: [s * mp, (s + 1) * mp), consecutive chips.
std::vector<int64_t> ModelGroupChips(const Mesh& mesh, int64_t shard);
// Chips with model coord m (they hold the same piece of every model-split parameter): m, m + mp,
// m + 2 mp, ... (every chip for mp = 1).
std::vector<int64_t> ModelPeerChips(const Mesh& mesh, int64_t model_coord);
// Every chip of the slice.
std::vector<int64_t> AllChips(const Mesh& mesh);

}  // namespace openmoe
