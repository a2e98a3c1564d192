#include "model/attention.h"

#include <algorithm>
#include <cmath>

#include "core/bf16.h"
#include "core/check.h"
#include "core/gemm.h"

namespace openmoe {
namespace {

// Scores more than this below their row's max get probability exactly 0. Such a probability
// (< 4e-18, against a row max >= 1/S) is far below fp32 resolution of the context it feeds, but
// kept, it and its products with small gradients become subnormal floats, which slow the GEMMs
// reading them several-fold (measured at B=16 S=256 with peaked scores: forward 2.4x, backward
// 4.4x slower).
constexpr float kMinScoreBelowMax = -40.0f;

// Softmax of one row of scores over the keys query i may see (j <= i, same segment), in place.
// Every other entry is set to exactly 0. Keys of other segments are skipped with a select so the
// loops stay branch-free; `lo` (the first key of i's segment) bounds the range that needs exp.
void MaskedSoftmaxRow(float* row, int64_t s_len, int64_t i, int64_t lo, const int32_t* seg) {
  const int32_t si = seg[i];
  float mx = row[i];  // the diagonal is always allowed
  for (int64_t j = lo; j < i; ++j) mx = seg[j] == si ? std::max(mx, row[j]) : mx;
  float sum = 0.0f;
  for (int64_t j = lo; j <= i; ++j) {
    const float z = row[j] - mx;
    const float e = seg[j] == si && z > kMinScoreBelowMax ? std::exp(z) : 0.0f;
    row[j] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
  for (int64_t j = lo; j <= i; ++j) row[j] *= inv;
  std::fill(row, row + lo, 0.0f);
  std::fill(row + i + 1, row + s_len, 0.0f);
}

}  // namespace

void AttentionForward(const AttentionDims& dims, const RopeTable& rope, const AttentionWeights& w,
                      const float* x, const int32_t* segment_ids, AttentionCache* cache, float* y) {
  const int64_t nb = dims.batch, s_len = dims.seq_len, d = dims.d_model, nh = dims.num_heads,
                hd = dims.head_dim, width = nh * hd, tokens = nb * s_len;
  const GemmPrecision pr = dims.precision;
  OPENMOE_CHECK(rope.seq_len == s_len && 2 * rope.half_dim == hd);
  cache->q.ResizeUninitialized({tokens, width});
  cache->k.ResizeUninitialized({tokens, width});
  cache->v.ResizeUninitialized({tokens, width});
  cache->probs.ResizeUninitialized({nb, nh, s_len, s_len});
  cache->context.ResizeUninitialized({tokens, width});
  float* q = cache->q.data();          // (B*S, H*hd)
  float* k = cache->k.data();          // (B*S, H*hd)
  float* v = cache->v.data();          // (B*S, H*hd)
  float* ctx = cache->context.data();  // (B*S, H*hd)
  Gemm(pr, {}, tokens, width, d, x, w.wq, q);
  Gemm(pr, {}, tokens, width, d, x, w.wk, k);
  Gemm(pr, {}, tokens, width, d, x, w.wv, v);
  ApplyRope(rope, q, nb, nh, width, /*inverse=*/false);
  ApplyRope(rope, k, nb, nh, width, /*inverse=*/false);
  // BF16: q, k, v and the context only feed GEMMs (forward and backward), which round them
  // anyway; rounding each once spares the bf16 GEMM a rounded copy per call (core/gemm.h).
  if (pr == GemmPrecision::kBf16) {
    for (float* t : {q, k, v}) RoundToBf16(t, t, tokens * width);
  }

  for (int64_t b = 0; b < nb; ++b) {
    const int32_t* seg = segment_ids + b * s_len;  // (S)
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t head = b * s_len * width + h * hd;                // offset of (b, 0, h, 0)
      float* p = cache->probs.data() + (b * nh + h) * s_len * s_len;  // (S, S)
      // Full S x S scores, masked afterwards: wasted upper-triangle flops, but one GEMM.
      Gemm(pr, {.transpose_b = true}, s_len, s_len, hd, q + head, width, k + head, width, p, s_len);
      int64_t lo = 0;
      for (int64_t i = 0; i < s_len; ++i) {
        // Packed segments are contiguous, so lo only moves at a boundary; scanning for the first
        // key of i's segment there also keeps non-contiguous segment ids correct.
        if (i > 0 && seg[i] != seg[i - 1]) {
          lo = 0;
          while (seg[lo] != seg[i]) ++lo;
        }
        MaskedSoftmaxRow(p + i * s_len, s_len, i, lo, seg);
      }
      Gemm(pr, {}, s_len, hd, s_len, p, s_len, v + head, width, ctx + head, width);
    }
  }
  if (pr == GemmPrecision::kBf16) RoundToBf16(ctx, ctx, tokens * width);
  Gemm(pr, {}, tokens, d, width, ctx, w.wo, y);
}

void AttentionBackward(const AttentionDims& dims, const RopeTable& rope, const AttentionWeights& w,
                       const float* x, const int32_t* segment_ids, AttentionCache* cache,
                       const float* dy, const AttentionGrads& grads, float* dx) {
  const int64_t nb = dims.batch, s_len = dims.seq_len, d = dims.d_model, nh = dims.num_heads,
                hd = dims.head_dim, width = nh * hd, tokens = nb * s_len, act = tokens * width;
  const GemmPrecision pr = dims.precision;
  OPENMOE_CHECK(rope.seq_len == s_len && 2 * rope.half_dim == hd);
  cache->workspace.ResizeUninitialized({4 * act + s_len * s_len});
  float* dctx = cache->workspace.data();  // (B*S, H*hd)
  float* dq = dctx + act;                 // (B*S, H*hd)
  float* dk = dq + act;                   // (B*S, H*hd)
  float* dv = dk + act;                   // (B*S, H*hd)
  float* ds = dv + act;                   // (S, S) dP, then dS in place
  const float* q = cache->q.data();       // (B*S, H*hd)
  const float* k = cache->k.data();       // (B*S, H*hd)
  const float* v = cache->v.data();       // (B*S, H*hd)
  // segment_ids is not read: the mask lives on in the exact zeros of cache->probs.

  // y = context @ wo.
  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, width, d, tokens, cache->context.data(), dy,
       grads.wo);
  Gemm(pr, {.transpose_b = true}, tokens, width, d, dy, w.wo, dctx);

  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t head = b * s_len * width + h * hd;
      const float* p = cache->probs.data() + (b * nh + h) * s_len * s_len;  // (S, S)
      // Backward of context_h = P v_h.
      Gemm(pr, {.transpose_b = true}, s_len, s_len, hd, dctx + head, width, v + head, width, ds,
           s_len);
      Gemm(pr, {.transpose_a = true}, s_len, hd, s_len, p, s_len, dctx + head, width, dv + head,
           width);
      // Softmax backward; masked entries have P == 0 exactly, so their dS is 0 too.
      for (int64_t i = 0; i < s_len; ++i) {
        const float* pr = p + i * s_len;
        float* dr = ds + i * s_len;
        float dot = 0.0f;
        for (int64_t j = 0; j < s_len; ++j) dot += pr[j] * dr[j];
        for (int64_t j = 0; j < s_len; ++j) dr[j] = pr[j] * (dr[j] - dot);
      }
      // Backward of scores = q_h k_h^T (q, k after RoPE).
      Gemm(pr, {}, s_len, hd, s_len, ds, s_len, k + head, width, dq + head, width);
      Gemm(pr, {.transpose_a = true}, s_len, hd, s_len, ds, s_len, q + head, width, dk + head,
           width);
    }
  }
  ApplyRope(rope, dq, nb, nh, width, /*inverse=*/true);
  ApplyRope(rope, dk, nb, nh, width, /*inverse=*/true);

  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, d, width, tokens, x, dq, grads.wq);
  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, d, width, tokens, x, dk, grads.wk);
  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, d, width, tokens, x, dv, grads.wv);
  Gemm(pr, {.transpose_b = true, .beta = 1.0f}, tokens, d, width, dq, w.wq, dx);
  Gemm(pr, {.transpose_b = true, .beta = 1.0f}, tokens, d, width, dk, w.wk, dx);
  Gemm(pr, {.transpose_b = true, .beta = 1.0f}, tokens, d, width, dv, w.wv, dx);
}

}  // namespace openmoe
