// Latency-plus-bandwidth time of the two collectives a training step runs, on a group's torus
// footprint (parallel/cost/torus_footprint.h). Every group of a kind runs at once on its own links
// (translates share links only through a footprint's stride, which RingLinks already divides by).
// W is one ICI link's bandwidth in one direction (bytes/s), h the latency of one hop (s).
//
// All-reduce of B bytes per chip (the gradient), as bidirectional rings one torus dimension after
// the other: reduce-scatter along the first dimension, all-reduce of the B / n_1 shard along the
// second, all-gather along the first (the 2D all-reduce of TPU pods). Per dimension i with n_i
// chips, ring links r_i and stride s_i:
//   T_i(bytes) = 2 (n_i - 1) / n_i * bytes / (r_i W)  +  2 (n_i - 1) s_i h
//   T = T_1(B) + T_2(B / n_1)
// taking the cheaper of the two dimension orders. A whole 16x16 torus: r = 2 in both dimensions,
// T = 2*15/16 * B / 2W + 2*15/16 * (B/16) / 2W + 60 h.
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

// The 2D all-reduce of `bytes` per chip over the footprint (0 for a single chip).
double AllReduceSeconds(const Footprint& f, double bytes, const LinkParams& link);

// One all-to-all with `bytes` per chip over the footprint (0 for a single chip).
double AllToAllSeconds(const Footprint& f, double bytes, const LinkParams& link);

}  // namespace openmoe
