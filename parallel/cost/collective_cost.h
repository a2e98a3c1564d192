// Latency-plus-bandwidth time of the two collectives a training step runs, on a group's torus
// footprint (parallel/cost/torus_footprint.h). Every group of a kind runs at once on its own links
// (translates share links only through a footprint's stride, which RingLinks already divides by).
// W is one ICI link's bandwidth in one direction (bytes/s), h the latency of one hop (s).
//
// All-reduce of B bytes per chip (the gradient), as bidirectional rings on both torus dimensions
// at once (the JAX scaling book, "How to think about TPU networking / collectives": a collective
// over several axes runs them concurrently, so all four links of a chip are busy): a fraction x
// of the buffer is reduce-scattered along x, all-reduced along y and all-gathered along x, the
// rest the other way round; chunks pipeline, so the slower dimension sets the time. With
// c_i = 2 (n_i - 1) / n_i * B / (r_i W) (one ring all-reduce of B along dimension i: n_i chips,
// ring links r_i, stride s_i) the links of x carry x B whole and (1 - x) B as 1 / n_y shards:
//   T = min_x max(c_x (x + (1 - x) / n_y), c_y ((1 - x) + x / n_x))  +  sum_i 2 (n_i - 1) s_i h
// (the minimum is at x = 0, 1 or where the two are equal). One dimension is a single ring, c_x.
// A whole 16x16 torus: x = 1/2, T = 15/16 * B * 17/16 / 2W + 60 h ~ 0.50 B / W (one dimension
// after the other would be ~1.0 B / W, half the links idle). ici_link_bandwidth is derived from
// Cloud's pod all-reduce figure with all four links busy, so this is the matching formula.
// Without wraparound a dimension is a line (r = 1 / s): its c doubles.
//
// All-to-all of B bytes per chip (each chip's whole send buffer, its own share included, spread
// evenly over the n chips of the group): half of every chip's data crosses the group's bisection,
// n B / 4 bytes each way, over BisectionLinks() links; no chip can inject faster than its
// links inside the group allow; the farthest message crosses the diameter:
//   T = max(n B / 4 / (b W),  (n - 1) / n * B / (sum_i r_i W))  +  diameter * h
// e.g. a row ring of 8 (b = 2): T = 8 B / 4 / 2W = B / W; an 8x8 torus (b = 16): 64 B / 4 / 16W
// = B / W; a 16x32 torus (b = 32): 512 B / 4 / 32W = 4 B / W. For a fixed B per chip on a
// square torus of N chips this grows as sqrt(N).
#pragma once

#include "parallel/cost/torus_footprint.h"

namespace openmoe {

struct LinkParams {
  double bandwidth = 0;    // one link, one direction, bytes/s
  double hop_latency = 0;  // seconds per hop
};

// One ring all-reduce along dimension `d` of the footprint: T_d(bytes) above (0 if size < 2).
double RingAllReduceSeconds(const Footprint& f, int d, double bytes, const LinkParams& link);

// The concurrent 2D all-reduce of `bytes` per chip over the footprint (0 for a single chip).
double AllReduceSeconds(const Footprint& f, double bytes, const LinkParams& link);

// One all-to-all with `bytes` per chip over the footprint (0 for a single chip).
double AllToAllSeconds(const Footprint& f, double bytes, const LinkParams& link);

}  // namespace openmoe
