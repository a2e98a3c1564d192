#include "model/ffn.h"

#include <algorithm>
#include <vector>

#include "core/gemm.h"
#include "core/gemm_rows.h"
#include "core/kernels.h"
#include "core/parallel_for.h"

namespace openmoe {

namespace {

// Rows per ParallelFor range of the gate's elementwise passes (>= 16k elements).
int64_t MinRows(const FfnDims& dims) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(dims.d_ff, 1));
}

// h (T, F) from the up-projections: the one definition the forward and the backward share, so the
// backward's h is the forward's bit for bit. BF16 holds h as bf16 (it only feeds GEMMs: wo forward
// and wo's gradient, which round it anyway; core/gemm_rows.h).
void GatedHidden(const FfnDims& dims, const float* g0, const float* g1, const GemmRows& h) {
  const int64_t t = dims.tokens, f = dims.d_ff, w0 = dims.Wi0Width();
  ParallelFor(t, MinRows(dims), [&](int64_t begin, int64_t end) {
    std::vector<float> row(h.f32 != nullptr ? 0 : f);  // BF16: a row of floats before rounding
    for (int64_t i = begin; i < end; ++i) {
      const float* g0r = g0 + i * w0;
      const float* g1r = g1 + i * f;
      float* hr = h.f32 != nullptr ? h.FloatRow(i) : row.data();
      if (dims.form == FFN_OPENMOE) {
        for (int64_t j = 0; j < f; ++j) hr[j] = g0r[j] * Silu(g0r[f + j]) * g1r[j];
      } else {
        for (int64_t j = 0; j < f; ++j) hr[j] = Silu(g0r[j]) * g1r[j];
      }
      h.SetRow(i, hr);
    }
  });
}

}  // namespace

int64_t FfnScratchFloats(const FfnDims& dims, bool backward) {
  const int64_t t = dims.tokens, f = dims.d_ff, w0 = dims.Wi0Width();
  const GemmPrecision pr = dims.precision;
  const int64_t h = GemmRowsFloats(pr, t, f);
  return backward ? h + t * f + GemmRowsFloats(pr, t, w0) : h;
}

void FfnForward(const FfnDims& dims, const FfnWeights& w, GemmInput x, FfnCache* cache, float* y,
                bool accumulate, ScratchArena* scratch) {
  const int64_t t = dims.tokens, d = dims.d_model, f = dims.d_ff, w0 = dims.Wi0Width();
  const GemmPrecision pr = dims.precision;
  cache->g0.ResizeUninitialized({t, w0});
  cache->g1.ResizeUninitialized({t, f});
  if (t == 0) return;
  ScratchArena local;
  if (scratch == nullptr) scratch = &local;
  ScratchScope scope(scratch);
  const GemmRows h = TakeGemmRows(scratch, pr, t, f);
  Gemm(pr, {}, t, w0, d, x, {w.wi_0, w0}, cache->g0.data(), w0);
  Gemm(pr, {}, t, f, d, x, {w.wi_1, f}, cache->g1.data(), f);
  GatedHidden(dims, cache->g0.data(), cache->g1.data(), h);
  Gemm(pr, {.beta = accumulate ? 1.0f : 0.0f}, t, d, f, h.input(), {w.wo, d}, y, d);
}

void FfnBackward(const FfnDims& dims, const FfnWeights& w, GemmInput x, const FfnCache* cache,
                 const float* dy, const FfnGrads& grads, float* dx, ScratchArena* scratch) {
  const int64_t t = dims.tokens, d = dims.d_model, f = dims.d_ff, w0 = dims.Wi0Width();
  const GemmPrecision pr = dims.precision;
  if (t == 0) return;
  ScratchArena local;
  if (scratch == nullptr) scratch = &local;
  ScratchScope scope(scratch);
  const GemmRows h = TakeGemmRows(scratch, pr, t, f);
  float* dh = scratch->Take(t * f);
  const GemmRows dg0 = TakeGemmRows(scratch, pr, t, w0);
  // d g1: in place of dh in FP32; in BF16 in h's bf16 rows, spent once wo's gradient has read h.
  const GemmRows dg1 = pr == GemmPrecision::kBf16 ? h : GemmRows{.f32 = dh, .cols = f};
  const float* g0 = cache->g0.data();
  const float* g1 = cache->g1.data();
  GatedHidden(dims, g0, g1, h);
  // wo: y = h @ wo.
  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, f, d, t, h.input(), {dy, d}, grads.wo, d);
  Gemm(pr, {.transpose_b = true}, t, f, d, dy, w.wo, dh);
  // Gate: dh -> dg0 and dg1. The gate's math reads g0, g1 and dh as fp32.
  ParallelFor(t, MinRows(dims), [&](int64_t begin, int64_t end) {
    // BF16: a row of each gradient in floats before it is rounded.
    std::vector<float> row0(dg0.f32 != nullptr ? 0 : w0), row1(dg1.f32 != nullptr ? 0 : f);
    for (int64_t i = begin; i < end; ++i) {
      const float* g0r = g0 + i * w0;
      const float* g1r = g1 + i * f;
      const float* dhr = dh + i * f;
      float* dg0r = dg0.f32 != nullptr ? dg0.FloatRow(i) : row0.data();
      float* dg1r = dg1.f32 != nullptr ? dg1.FloatRow(i) : row1.data();  // FP32: dhr itself
      if (dims.form == FFN_OPENMOE) {
        for (int64_t j = 0; j < f; ++j) {
          const float a = g0r[j], b = g0r[f + j], c = g1r[j], up = dhr[j];
          const float sb = Silu(b);
          dg0r[j] = up * sb * c;
          dg0r[f + j] = up * a * c * SiluGrad(b);
          dg1r[j] = up * a * sb;
        }
      } else {
        for (int64_t j = 0; j < f; ++j) {
          const float a = g0r[j], c = g1r[j], up = dhr[j];
          dg0r[j] = up * c * SiluGrad(a);
          dg1r[j] = up * Silu(a);
        }
      }
      dg0.SetRow(i, dg0r);
      dg1.SetRow(i, dg1r);
    }
  });
  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, d, w0, t, x, dg0.input(), grads.wi_0, w0);
  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, d, f, t, x, dg1.input(), grads.wi_1, f);
  Gemm(pr, {.transpose_b = true, .beta = 1.0f}, t, d, w0, dg0.input(), {w.wi_0, w0}, dx, d);
  Gemm(pr, {.transpose_b = true, .beta = 1.0f}, t, d, f, dg1.input(), {w.wi_1, f}, dx, d);
}

}  // namespace openmoe
