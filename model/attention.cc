#include "model/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "core/bf16.h"
#include "core/check.h"
#include "core/gemm.h"
#include "core/kernels.h"

namespace openmoe {
namespace {

constexpr int64_t kBlk = kAttentionBlock;

// Scores more than this below their row's max get probability exactly 0. Such a probability
// (< 4e-18, against a row max >= 1/S) is far below fp32 resolution of the context it feeds, but
// kept, it and its products with small gradients become subnormal floats, which slow the GEMMs
// reading them several-fold (measured at B=16 S=256 with peaked scores: forward 2.4x, backward
// 4.4x slower). The forward cuts against its running max, the backward against the log-sum-exp
// (>= the max); either way what is cut is below e^-40 of the row's total.
constexpr float kMinScoreBelowMax = -40.0f;

// lo[i] = the first key of query i's segment in its row (the smallest j with seg[j] == seg[i]).
// Packed segments are contiguous, so lo only moves at a boundary; scanning from 0 there also keeps
// non-contiguous segment ids correct (the mask itself is by id equality).
void SegmentStarts(const int32_t* seg, int64_t s_len, int64_t* lo) {
  int64_t start = 0;
  for (int64_t i = 0; i < s_len; ++i) {
    if (i > 0 && seg[i] != seg[i - 1]) {
      start = 0;
      while (seg[start] != seg[i]) ++start;
    }
    lo[i] = start;
  }
}

// One (row b, head h) of the (B*S, H*hd) matrices, with its row's mask.
struct Head {
  int64_t ld;  // of the (B*S, H*hd) matrices: H*hd
  int64_t hd;
  int64_t s_len;
  const int32_t* seg;  // (S)
  const int64_t* lo;   // (S) SegmentStarts
  int64_t offset;      // of the head's first element in the (B*S, H*hd) matrices
};

// Head bh = b * H + h, with the cache's segment starts (made by the forward).
Head HeadOf(const AttentionDims& dims, const AttentionCache& cache, const int32_t* segment_ids,
            int64_t bh) {
  const int64_t s_len = dims.seq_len, nh = dims.num_heads, hd = dims.head_dim, width = nh * hd;
  const int64_t b = bh / nh, offset = b * s_len * width + bh % nh * hd;
  return {width, hd, s_len, segment_ids + b * s_len, cache.segment_starts.data() + b * s_len,
          offset};
}

// A head's q, k, v and context (S, hd) as floats, leading dimension ld.
struct HeadInputs {
  const float *q, *k, *v, *o;
  int64_t ld;
};

bool KeepsBf16(const AttentionDims& dims) { return dims.precision == GemmPrecision::kBf16; }

// Floats per worker to widen one head's bf16 q, k, v and context (0 in FP32).
int64_t WidenFloats(const AttentionDims& dims) {
  return KeepsBf16(dims) ? 4 * dims.seq_len * dims.head_dim : 0;
}

// Views into the FP32 cache, or the BF16 cache's values widened (exactly) into `buffer`
// (WidenFloats floats).
HeadInputs InputsOf(const AttentionDims& dims, const AttentionCache& cache, const Head& head,
                    float* buffer) {
  const int64_t o = head.offset;
  if (!KeepsBf16(dims)) {
    return {cache.q.data() + o, cache.k.data() + o, cache.v.data() + o, cache.context.data() + o,
            head.ld};
  }
  const int64_t s_len = head.s_len, hd = head.hd;
  const std::vector<uint16_t>* from[4] = {&cache.q16, &cache.k16, &cache.v16, &cache.context16};
  for (int t = 0; t < 4; ++t)
    for (int64_t r = 0; r < s_len; ++r)
      Bf16ToFloat(from[t]->data() + o + r * head.ld, buffer + (t * s_len + r) * hd, hd);
  return {buffer, buffer + s_len * hd, buffer + 2 * s_len * hd, buffer + 3 * s_len * hd, hd};
}

// The first key block that query block [i0, i1) needs: blocks wholly before every one of its
// queries' segment starts hold no allowed key. Blocks from i1 on are wholly above the diagonal.
int64_t FirstKeyBlock(const Head& hd, int64_t i0, int64_t i1) {
  const int64_t min_lo = *std::min_element(hd.lo + i0, hd.lo + i1);
  return min_lo / kBlk * kBlk;
}

// The allowed keys of query i inside key block [j0, j1) lie in [jb, je) (and share i's segment).
struct KeyRange {
  int64_t jb, je;
};
KeyRange AllowedRange(const Head& hd, int64_t i, int64_t j0, int64_t j1) {
  return {std::max(j0, hd.lo[i]), std::min(j1, i + 1)};
}

// Forward of one tile with the online softmax: turns the score tile into exp(score - m_new)
// (masked and cut entries exactly 0), updates each row's running max m and sum l, and rescales the
// rows of the output accumulator o (leading dimension ld) already holding earlier key blocks.
void OnlineSoftmaxTile(const Head& hd, int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* p,
                       float* m, float* l, float* o) {
  for (int64_t r = 0; r < nq; ++r) {
    const int64_t i = i0 + r;
    float* row = p + r * kBlk;
    const int32_t si = hd.seg[i];
    const auto [jb, je] = AllowedRange(hd, i, j0, j0 + nk);
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t j = jb; j < je; ++j) mx = hd.seg[j] == si ? std::max(mx, row[j - j0]) : mx;
    if (mx == -std::numeric_limits<float>::infinity()) {  // no key of this tile: row untouched
      std::fill(row, row + nk, 0.0f);
      continue;
    }
    const float m_new = std::max(m[r], mx);
    // m[r] = -inf (no earlier key) gives alpha 0; so does an old max cut against the new one.
    const float alpha = m[r] - m_new > kMinScoreBelowMax ? ExpNonPositive(m[r] - m_new) : 0.0f;
    // Branch-free (a select, not a branch, per key), so the loop vectorises.
    float* keys = row - j0;
    const int32_t* seg = hd.seg;
    for (int64_t j = jb; j < je; ++j) {
      const float z = keys[j] - m_new;
      const float e = ExpNonPositive(z);
      keys[j] = (seg[j] == si) & (z > kMinScoreBelowMax) ? e : 0.0f;
    }
    float sum = 0.0f;
    for (int64_t j = jb; j < je; ++j) sum += keys[j];
    std::fill(row, row + std::max<int64_t>(jb - j0, 0), 0.0f);
    std::fill(row + std::max<int64_t>(je - j0, 0), row + nk, 0.0f);
    l[r] = l[r] * alpha + sum;
    m[r] = m_new;
    if (alpha != 1.0f) {
      float* orow = o + r * hd.ld;
      for (int64_t c = 0; c < hd.hd; ++c) orow[c] *= alpha;
    }
  }
}

// The softmax tile recomputed from the scores and each row's log-sum-exp: exp(score - lse) on the
// allowed keys, exactly 0 elsewhere.
void ProbabilityTile(const Head& hd, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                     const float* lse, float* p) {
  for (int64_t r = 0; r < nq; ++r) {
    const int64_t i = i0 + r;
    float* row = p + r * kBlk;
    const int32_t si = hd.seg[i];
    const float li = lse[i];
    const auto [jb, je] = AllowedRange(hd, i, j0, j0 + nk);
    float* keys = row - j0;
    const int32_t* seg = hd.seg;
    for (int64_t j = jb; j < je; ++j) {  // branch-free, as in OnlineSoftmaxTile
      const float z = keys[j] - li;
      const float e = ExpNonPositive(std::min(z, 0.0f));
      keys[j] = (seg[j] == si) & (z > kMinScoreBelowMax) ? e : 0.0f;
    }
    std::fill(row, row + std::clamp<int64_t>(jb - j0, 0, nk), 0.0f);
    std::fill(row + std::clamp<int64_t>(je - j0, 0, nk), row + nk, 0.0f);
  }
}

// Runs fn(worker, bh) for every bh in [0, count) on up to GemmThreads() threads (the caller is
// worker 0). The per-tile GEMMs are small enough that OpenBLAS runs each on its calling thread, so
// the heads, not the GEMMs, carry the parallelism.
template <typename Fn>
void ForEachHead(int64_t count, int64_t workers, Fn fn) {
  std::atomic<int64_t> next{0};
  auto run = [&](int64_t worker) {
    for (int64_t bh = next.fetch_add(1); bh < count; bh = next.fetch_add(1)) fn(worker, bh);
  };
  std::vector<std::thread> threads;
  for (int64_t w = 1; w < workers; ++w) threads.emplace_back(run, w);
  run(0);
  for (std::thread& t : threads) t.join();
}

int64_t Workers(int64_t heads) { return std::clamp<int64_t>(GemmThreads(), 1, heads); }

// Per-worker scratch: two (kBlk, kBlk) tiles and three kBlk row vectors, then the HeadTiles'
// packed operands, then (backward, BF16) the widened head.
constexpr int64_t kTileFloats = 2 * kBlk * kBlk + 3 * kBlk;
int64_t WorkerFloats(const AttentionDims& dims, bool backward) {
  return kTileFloats +
         HeadTiles::StorageWords(dims.precision, dims.seq_len, dims.head_dim, backward) +
         (backward ? WidenFloats(dims) : 0);
}
float* WidenBuffer(const AttentionDims& dims, float* worker_scratch) {
  return worker_scratch + kTileFloats +
         HeadTiles::StorageWords(dims.precision, dims.seq_len, dims.head_dim, /*backward=*/true);
}

// One HeadTiles per worker, each on its own part of `scratch` (after the worker's tiles).
std::vector<HeadTiles> WorkerTiles(const AttentionDims& dims, int64_t workers, bool backward,
                                   float* scratch) {
  std::vector<HeadTiles> out;
  out.reserve(workers);
  const int64_t width = dims.num_heads * dims.head_dim;
  for (int64_t w = 0; w < workers; ++w) {
    // The arena's floats hold packed uint32 words here and nothing else while the call runs.
    auto* storage = reinterpret_cast<uint32_t*>(scratch + w * WorkerFloats(dims, backward) +
                                                kTileFloats);
    out.emplace_back(dims.precision, dims.seq_len, dims.head_dim, width, backward, storage);
  }
  return out;
}

}  // namespace

int64_t AttentionCache::CapacityBytes() const {
  int64_t bytes = q.capacity_bytes() + k.capacity_bytes() + v.capacity_bytes() +
                  context.capacity_bytes() + lse.capacity_bytes();
  for (const auto* x : {&q16, &k16, &v16, &context16})
    bytes += static_cast<int64_t>(x->capacity() * sizeof(uint16_t));
  return bytes + static_cast<int64_t>(segment_starts.capacity() * sizeof(int64_t));
}

int64_t AttentionScratchFloats(const AttentionDims& dims, bool backward, int64_t workers) {
  const int64_t act = dims.batch * dims.seq_len * dims.num_heads * dims.head_dim;
  const int64_t per_call = backward ? 4 * act : (KeepsBf16(dims) ? 4 * act : 0);
  return workers * WorkerFloats(dims, backward) + per_call;
}

int64_t AttentionForwardScratchFloats(const AttentionDims& dims) {
  return AttentionScratchFloats(dims, false, Workers(dims.batch * dims.num_heads));
}

int64_t AttentionBackwardScratchFloats(const AttentionDims& dims) {
  return AttentionScratchFloats(dims, true, Workers(dims.batch * dims.num_heads));
}

void AttentionForward(const AttentionDims& dims, const RopeTable& rope, const AttentionWeights& w,
                      const float* x, const int32_t* segment_ids, AttentionCache* cache, float* y,
                      ScratchArena* scratch) {
  const int64_t nb = dims.batch, s_len = dims.seq_len, d = dims.d_model, nh = dims.num_heads,
                hd = dims.head_dim, width = nh * hd, tokens = nb * s_len;
  const GemmPrecision pr = dims.precision;
  OPENMOE_CHECK(rope.seq_len == s_len && 2 * rope.half_dim == hd);
  const int64_t workers = Workers(nb * nh), act = tokens * width;
  const bool keep16 = KeepsBf16(dims);
  cache->lse.ResizeUninitialized({nb, nh, s_len});
  ScratchArena local;
  if (scratch == nullptr) scratch = &local;
  ScratchScope scope(scratch);
  float* tiles = scratch->Take(workers * WorkerFloats(dims, /*backward=*/false));
  std::vector<HeadTiles> products = WorkerTiles(dims, workers, /*backward=*/false, tiles);
  // FP32 computes q, k, v and the context in the cache; BF16 in scratch, then keeps them as bf16.
  auto where = [&](Tensor* t) {
    if (keep16) {
      *t = Tensor();  // a cache that held FP32 before holds nothing now
      return scratch->Take(act);
    }
    t->ResizeUninitialized({tokens, width});
    return t->data();
  };
  float* q = where(&cache->q);          // (B*S, H*hd)
  float* k = where(&cache->k);          // (B*S, H*hd)
  float* v = where(&cache->v);          // (B*S, H*hd)
  float* ctx = where(&cache->context);  // (B*S, H*hd)
  Gemm(pr, {}, tokens, width, d, x, w.wq, q);
  Gemm(pr, {}, tokens, width, d, x, w.wk, k);
  Gemm(pr, {}, tokens, width, d, x, w.wv, v);
  ApplyRope(rope, q, nb, nh, width, /*inverse=*/false);
  ApplyRope(rope, k, nb, nh, width, /*inverse=*/false);
  cache->segment_starts.resize(tokens);  // (B, S)
  for (int64_t b = 0; b < nb; ++b)
    SegmentStarts(segment_ids + b * s_len, s_len, &cache->segment_starts[b * s_len]);

  ForEachHead(nb * nh, workers, [&](int64_t worker, int64_t bh) {
    const Head view = HeadOf(dims, *cache, segment_ids, bh);
    const int64_t head = view.offset;
    HeadTiles& product = products[worker];
    product.Bind(q + head, k + head, v + head, width);
    float* p = tiles + worker * WorkerFloats(dims, false);  // (kBlk, kBlk)
    float* m = p + 2 * kBlk * kBlk;                          // (kBlk) running max
    float* l = m + kBlk;                                     // (kBlk) running sum
    float* lse = cache->lse.data() + bh * s_len;             // (S)
    float* o = ctx + head;                                   // (S, hd), leading dimension width
    for (int64_t i0 = 0; i0 < s_len; i0 += kBlk) {
      const int64_t nq = std::min(kBlk, s_len - i0), i1 = i0 + nq;
      std::fill(m, m + nq, -std::numeric_limits<float>::infinity());
      std::fill(l, l + nq, 0.0f);
      for (int64_t r = 0; r < nq; ++r) std::fill_n(o + (i0 + r) * width, hd, 0.0f);
      for (int64_t j0 = FirstKeyBlock(view, i0, i1); j0 < i1; j0 += kBlk) {
        const int64_t nk = std::min(kBlk, i1 - j0);
        product.Scores(i0, nq, j0, nk, p);
        OnlineSoftmaxTile(view, i0, nq, j0, nk, p, m, l, o + i0 * width);
        product.AddContext(p, i0, nq, j0, nk, o);
      }
      // The diagonal is allowed and never cut, so every l >= 1.
      for (int64_t r = 0; r < nq; ++r) {
        const float inv = 1.0f / l[r];
        for (int64_t c = 0; c < hd; ++c) o[(i0 + r) * width + c] *= inv;
        lse[i0 + r] = m[r] + std::log(l[r]);
      }
    }
  });
  if (!keep16) {
    Gemm(pr, {}, tokens, d, width, ctx, w.wo, y);
    return;
  }
  // q, k, v, context only feed GEMMs, which round them: kept as bf16, the values they would see.
  const std::pair<const float*, std::vector<uint16_t>*> keep[] = {
      {q, &cache->q16}, {k, &cache->k16}, {v, &cache->v16}, {ctx, &cache->context16}};
  for (const auto& [from, to] : keep) {
    to->resize(static_cast<size_t>(act));
    FloatToBf16(from, to->data(), act);
  }
  Gemm(GemmPrecision::kBf16, {}, tokens, d, width, {cache->context16.data(), width}, {w.wo, d}, y,
       d);
}

void AttentionBackward(const AttentionDims& dims, const RopeTable& rope, const AttentionWeights& w,
                       const float* x, const int32_t* segment_ids, const AttentionCache* cache,
                       const float* dy, const AttentionGrads& grads, float* dx,
                       ScratchArena* scratch) {
  const int64_t nb = dims.batch, s_len = dims.seq_len, d = dims.d_model, nh = dims.num_heads,
                hd = dims.head_dim, width = nh * hd, tokens = nb * s_len, act = tokens * width;
  const GemmPrecision pr = dims.precision;
  OPENMOE_CHECK(rope.seq_len == s_len && 2 * rope.half_dim == hd);
  const int64_t workers = Workers(nb * nh);
  ScratchArena local;
  if (scratch == nullptr) scratch = &local;
  ScratchScope scope(scratch);
  float* tiles = scratch->Take(workers * WorkerFloats(dims, /*backward=*/true));
  std::vector<HeadTiles> products = WorkerTiles(dims, workers, /*backward=*/true, tiles);
  float* dctx = scratch->Take(4 * act);  // (B*S, H*hd)
  float* dq = dctx + act;                 // (B*S, H*hd)
  float* dk = dq + act;                   // (B*S, H*hd)
  float* dv = dk + act;                   // (B*S, H*hd)
  // y = context @ wo.
  if (KeepsBf16(dims)) {
    Gemm(GemmPrecision::kBf16, {.transpose_a = true, .beta = 1.0f}, width, d, tokens,
         {cache->context16.data(), width}, {dy, d}, grads.wo, d);
  } else {
    Gemm(pr, {.transpose_a = true, .beta = 1.0f}, width, d, tokens, cache->context.data(), dy,
         grads.wo);
  }
  Gemm(pr, {.transpose_b = true}, tokens, width, d, dy, w.wo, dctx);
  // BF16: dcontext only feeds GEMMs (dP and dV), which round it anyway; D = rowsum(dO * O) then
  // reads the values those GEMMs see.
  if (pr == GemmPrecision::kBf16) RoundToBf16(dctx, dctx, act);
  // FlashAttention-2 backward per head: for each tile, P = exp(q k^T - lse), dP = dO v^T,
  // dv += P^T dO, dS = P * (dP - D) with D_i = dO_i . O_i (= sum_j P_ij dP_ij), dq += dS k,
  // dk += dS^T q. Masked entries have P == 0 exactly, so their dS is 0 too.
  ForEachHead(nb * nh, workers, [&](int64_t worker, int64_t bh) {
    const Head view = HeadOf(dims, *cache, segment_ids, bh);
    const int64_t head = view.offset;
    HeadTiles& product = products[worker];
    float* worker_scratch = tiles + worker * WorkerFloats(dims, true);
    const HeadInputs in = InputsOf(dims, *cache, view, WidenBuffer(dims, worker_scratch));
    product.Bind(in.q, in.k, in.v, in.ld, dctx + head, width);
    float* p = worker_scratch;  // (kBlk, kBlk)
    float* ds = p + kBlk * kBlk;                             // (kBlk, kBlk) dP, then dS
    float* dd = ds + kBlk * kBlk;                            // (kBlk) D
    const float* lse = cache->lse.data() + bh * s_len;       // (S)
    for (int64_t r = 0; r < s_len; ++r) {
      std::fill_n(dq + head + r * width, hd, 0.0f);
      std::fill_n(dk + head + r * width, hd, 0.0f);
      std::fill_n(dv + head + r * width, hd, 0.0f);
    }
    for (int64_t i0 = 0; i0 < s_len; i0 += kBlk) {
      const int64_t nq = std::min(kBlk, s_len - i0), i1 = i0 + nq;
      const float* d_o = dctx + head + i0 * width;  // (nq, hd)
      for (int64_t r = 0; r < nq; ++r) {
        const float* orow = in.o + (i0 + r) * in.ld;
        float dot = 0.0f;
        for (int64_t c = 0; c < hd; ++c) dot += d_o[r * width + c] * orow[c];
        dd[r] = dot;
      }
      for (int64_t j0 = FirstKeyBlock(view, i0, i1); j0 < i1; j0 += kBlk) {
        const int64_t nk = std::min(kBlk, i1 - j0);
        product.Scores(i0, nq, j0, nk, p);
        ProbabilityTile(view, i0, nq, j0, nk, lse, p);
        product.OutputGradScores(i0, nq, j0, nk, ds);
        product.AddValueGrad(p, i0, nq, j0, nk, dv + head);
        for (int64_t r = 0; r < nq; ++r) {
          const float* prow = p + r * kBlk;
          float* drow = ds + r * kBlk;
          for (int64_t j = 0; j < nk; ++j) drow[j] = prow[j] * (drow[j] - dd[r]);
        }
        product.AddQueryGrad(ds, i0, nq, j0, nk, dq + head);
        product.AddKeyGrad(ds, i0, nq, j0, nk, dk + head);
      }
    }
  });
  ApplyRope(rope, dq, nb, nh, width, /*inverse=*/true);
  ApplyRope(rope, dk, nb, nh, width, /*inverse=*/true);

  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, d, width, tokens, x, dq, grads.wq);
  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, d, width, tokens, x, dk, grads.wk);
  Gemm(pr, {.transpose_a = true, .beta = 1.0f}, d, width, tokens, x, dv, grads.wv);
  Gemm(pr, {.transpose_b = true, .beta = 1.0f}, tokens, d, width, dq, w.wq, dx);
  Gemm(pr, {.transpose_b = true, .beta = 1.0f}, tokens, d, width, dk, w.wk, dx);
  Gemm(pr, {.transpose_b = true, .beta = 1.0f}, tokens, d, width, dv, w.wv, dx);
}

void AttentionProbabilities(const AttentionDims& dims, const AttentionCache& cache,
                            const int32_t* segment_ids, int64_t b, int64_t h, float* probs) {
  const int64_t s_len = dims.seq_len, nh = dims.num_heads;
  OPENMOE_CHECK(b >= 0 && b < dims.batch && h >= 0 && h < nh &&
                cache.lse.size() == dims.batch * nh * s_len);
  const Head view = HeadOf(dims, cache, segment_ids, b * nh + h);
  const float* lse = cache.lse.data() + (b * nh + h) * s_len;
  std::vector<float> p(kBlk * kBlk);
  std::vector<uint32_t> storage(
      HeadTiles::StorageWords(dims.precision, s_len, dims.head_dim, /*backward=*/false));
  HeadTiles product(dims.precision, s_len, dims.head_dim, nh * dims.head_dim, /*backward=*/false,
                    storage.data());
  std::vector<float> widened(WidenFloats(dims));
  const HeadInputs in = InputsOf(dims, cache, view, widened.data());
  product.Bind(in.q, in.k, in.v, in.ld);
  std::fill_n(probs, s_len * s_len, 0.0f);
  for (int64_t i0 = 0; i0 < s_len; i0 += kBlk) {
    const int64_t nq = std::min(kBlk, s_len - i0), i1 = i0 + nq;
    for (int64_t j0 = FirstKeyBlock(view, i0, i1); j0 < i1; j0 += kBlk) {
      const int64_t nk = std::min(kBlk, i1 - j0);
      product.Scores(i0, nq, j0, nk, p.data());
      ProbabilityTile(view, i0, nq, j0, nk, lse, p.data());
      for (int64_t r = 0; r < nq; ++r)
        std::copy_n(p.data() + r * kBlk, nk, probs + (i0 + r) * s_len + j0);
    }
  }
}

}  // namespace openmoe
