#include "model/ffn.h"

#include <algorithm>

#include "core/bf16.h"
#include "core/gemm.h"
#include "core/kernels.h"
#include "core/parallel_for.h"

namespace openmoe {

namespace {

// Rows per ParallelFor range of the gate's elementwise passes (>= 16k elements).
int64_t MinRows(const FfnDims& dims) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(dims.d_ff, 1));
}

// h (T, F) from the up-projections: the one definition the forward and the backward share, so the
// backward's h is the forward's bit for bit. BF16: h only feeds GEMMs (wo forward and wo's
// gradient), which round it anyway; rounding it once spares the bf16 GEMM a rounded copy per
// call (core/gemm.h uses bf16 values as they are).
void GatedHidden(const FfnDims& dims, const float* g0, const float* g1, float* h) {
  const int64_t t = dims.tokens, f = dims.d_ff, w0 = dims.Wi0Width();
  ParallelFor(t, MinRows(dims), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* g0r = g0 + i * w0;
      const float* g1r = g1 + i * f;
      float* hr = h + i * f;
      if (dims.form == FFN_OPENMOE) {
        for (int64_t j = 0; j < f; ++j) hr[j] = g0r[j] * Silu(g0r[f + j]) * g1r[j];
      } else {
        for (int64_t j = 0; j < f; ++j) hr[j] = Silu(g0r[j]) * g1r[j];
      }
      if (dims.precision == GemmPrecision::kBf16) RoundToBf16(hr, hr, f);
    }
  });
}

}  // namespace

void FfnForward(const FfnDims& dims, const FfnWeights& w, const float* x, FfnCache* cache,
                float* y, bool accumulate, ScratchArena* scratch) {
  const int64_t t = dims.tokens, d = dims.d_model, f = dims.d_ff, w0 = dims.Wi0Width();
  const GemmPrecision pr = dims.precision;
  cache->g0.ResizeUninitialized({t, w0});
  cache->g1.ResizeUninitialized({t, f});
  if (t == 0) return;
  ScratchArena local;
  if (scratch == nullptr) scratch = &local;
  ScratchScope scope(scratch);
  float* h = scratch->Take(t * f);
  Gemm(pr, {}, t, w0, d, x, w.wi_0, cache->g0.data());
  Gemm(pr, {}, t, f, d, x, w.wi_1, cache->g1.data());
  GatedHidden(dims, cache->g0.data(), cache->g1.data(), h);
  Gemm(pr, {.beta = accumulate ? 1.0f : 0.0f}, t, d, f, h, w.wo, y);
}

void FfnBackward(const FfnDims& dims, const FfnWeights& w, const float* x, const FfnCache* cache,
                 const float* dy, const FfnGrads& grads, float* dx, ScratchArena* scratch) {
  const int64_t t = dims.tokens, d = dims.d_model, f = dims.d_ff, w0 = dims.Wi0Width();
  const GemmPrecision pr = dims.precision;
  if (t == 0) return;
  ScratchArena local;
  if (scratch == nullptr) scratch = &local;
  ScratchScope scope(scratch);
  float* h = scratch->Take(t * f);
  float* dh = scratch->Take(t * f);
  float* dg0 = scratch->Take(t * w0);
  const float* g0 = cache->g0.data();
  const float* g1 = cache->g1.data();
  GatedHidden(dims, g0, g1, h);
  // wo: y = h @ wo.
  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, f, d, t, h, dy, grads.wo);
  Gemm(pr, {.transpose_b = true}, t, f, d, dy, w.wo, dh);
  // Gate: dh -> dg0 (into dg0) and dg1 (into dh, reused in place).
  ParallelFor(t, MinRows(dims), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* g0r = g0 + i * w0;
      const float* g1r = g1 + i * f;
      float* dhr = dh + i * f;
      float* dg0r = dg0 + i * w0;
      if (dims.form == FFN_OPENMOE) {
        for (int64_t j = 0; j < f; ++j) {
          const float a = g0r[j], b = g0r[f + j], c = g1r[j], up = dhr[j];
          const float sb = Silu(b);
          dg0r[j] = up * sb * c;
          dg0r[f + j] = up * a * c * SiluGrad(b);
          dhr[j] = up * a * sb;  // now d g1
        }
      } else {
        for (int64_t j = 0; j < f; ++j) {
          const float a = g0r[j], c = g1r[j], up = dhr[j];
          dg0r[j] = up * c * SiluGrad(a);
          dhr[j] = up * Silu(a);
        }
      }
      if (pr == GemmPrecision::kBf16) {  // GEMM inputs only, as h above
        RoundToBf16(dg0r, dg0r, w0);
        RoundToBf16(dhr, dhr, f);
      }
    }
  });
  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, d, w0, t, x, dg0, grads.wi_0);
  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, d, f, t, x, dh, grads.wi_1);
  Gemm(pr, {.transpose_b = true, .beta = 1.0f}, t, d, w0, dg0, w.wi_0, dx);
  Gemm(pr, {.transpose_b = true, .beta = 1.0f}, t, d, f, dh, w.wi_1, dx);
}

}  // namespace openmoe
