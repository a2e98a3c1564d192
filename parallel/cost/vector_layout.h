// What an array occupies in a TPU core's memory: the two minor dimensions of every array are
// tiled in 8 x 128 (sublanes x lanes; XLA's tiled layouts, "Tiled layout" in the XLA docs; the
// JAX Pallas TPU guide's (8, 128) blocks), so a minor dimension of m elements takes
// 128 ceil(m / 128) lanes and the second-minor one of r takes 8 ceil(r / 8) sublanes. Elementwise
// passes move whole tiles: their HBM traffic is the padded size.
//
// Used for GShard / T5X / Mesh TensorFlow's one-hot dispatch and combine masks, built as
// (groups, group size, experts, capacity) with the capacity minor (GShard's Algorithm 1, Mesh
// TensorFlow's moe.py: one_hot(position_in_expert, expert_capacity) is the last dimension): a
// capacity C of 8 (Switch-Base, 1024-token groups, 128 experts, capacity factor 1) fills 8 of
// 128 lanes, so each mask pass moves 16x its elements. Assumed: XLA keeps that logical order as
// the layout of the masks' elementwise passes (layout assignment is free to choose another; the
// einsums' own operand layouts are not modelled).
#pragma once

#include <cstdint>

namespace openmoe {

inline constexpr int64_t kSublanes = 8;
inline constexpr int64_t kLanes = 128;

// Elements an array of `rows` x `minor` (its two minor dimensions) occupies once tiled; rows,
// minor >= 1.
double TiledElements(int64_t rows, int64_t minor);

}  // namespace openmoe
