#include "model/attention_tiles.h"

#include <algorithm>

#include "core/bf16_pair_gemm.h"
#include "core/check.h"

namespace openmoe {
namespace {

constexpr int64_t kBlk = kAttentionBlock;
constexpr int64_t kTileWords = kBlk * ((kBlk + 1) / 2);

int64_t Pairs(int64_t n) { return (n + 1) / 2; }

}  // namespace

int64_t HeadTiles::StorageWords(GemmPrecision precision, int64_t s_len, int64_t hd, bool backward) {
  if (precision != GemmPrecision::kBf16) return 0;
  // q_rows (S, hd/2), k_t (hd/2, S), v_down (S/2, hd); backward adds v_t, k_down, q_down,
  // d_o_rows and d_o_down of the same sizes.
  const int64_t head = std::max(s_len * Pairs(hd), Pairs(s_len) * hd);
  return (backward ? 8 : 3) * head + kTileWords;
}

HeadTiles::HeadTiles(GemmPrecision precision, int64_t s_len, int64_t hd, int64_t out_ld,
                     bool backward, uint32_t* storage)
    : precision_(precision),
      s_len_(s_len),
      hd_(hd),
      ld_(out_ld),
      hd_pairs_(Pairs(hd)),
      s_pairs_(Pairs(s_len)),
      backward_(backward) {
  if (!bf16()) return;
  OPENMOE_CHECK(storage != nullptr);
  const int64_t head = std::max(s_len * hd_pairs_, s_pairs_ * hd);
  uint32_t* next = storage;
  auto take = [&](int64_t words) {
    uint32_t* out = next;
    next += words;
    return out;
  };
  q_rows_ = take(head);
  k_t_ = take(head);
  v_down_ = take(head);
  if (backward) {
    v_t_ = take(head);
    k_down_ = take(head);
    q_down_ = take(head);
    d_o_rows_ = take(head);
    d_o_down_ = take(head);
  }
  tile_ = take(kTileWords);
}

void HeadTiles::Bind(const float* q, const float* k, const float* v, int64_t ld, const float* d_o,
                     int64_t d_o_ld) {
  OPENMOE_CHECK(backward_ == (d_o != nullptr));
  q_ = q;
  k_ = k;
  v_ = v;
  d_o_ = d_o;
  in_ld_ = ld;
  d_o_ld_ = d_o_ld;
  if (!bf16()) return;
  PackPairsAlongRows(q, ld, s_len_, hd_, q_rows_, hd_pairs_);
  PackPairsAlongRowsTransposed(k, ld, s_len_, hd_, k_t_, s_len_);
  PackPairsDownColumns(v, ld, s_len_, hd_, v_down_, hd_);
  if (!backward_) return;
  PackPairsAlongRowsTransposed(v, ld, s_len_, hd_, v_t_, s_len_);
  PackPairsDownColumns(k, ld, s_len_, hd_, k_down_, hd_);
  PackPairsDownColumns(q, ld, s_len_, hd_, q_down_, hd_);
  PackPairsAlongRows(d_o, d_o_ld, s_len_, hd_, d_o_rows_, hd_pairs_);
  PackPairsDownColumns(d_o, d_o_ld, s_len_, hd_, d_o_down_, hd_);
}

void HeadTiles::Scores(int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* s) {
  if (!bf16()) {
    Gemm(precision_, {.transpose_b = true}, nq, nk, hd_, q_ + i0 * in_ld_, in_ld_,
         k_ + j0 * in_ld_, in_ld_, s, kBlk);
    return;
  }
  Bf16PairGemm(nq, nk, hd_pairs_, q_rows_ + i0 * hd_pairs_, hd_pairs_, k_t_ + j0, s_len_, s, kBlk,
               /*accumulate=*/false);
}

void HeadTiles::AddContext(const float* p, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                           float* o) {
  if (!bf16()) {
    Gemm(precision_, {.beta = 1.0f}, nq, hd_, nk, p, kBlk, v_ + j0 * in_ld_, in_ld_, o + i0 * ld_,
         ld_);
    return;
  }
  PackPairsAlongRows(p, kBlk, nq, nk, tile_, Pairs(nk));
  Bf16PairGemm(nq, hd_, Pairs(nk), tile_, Pairs(nk), v_down_ + j0 / 2 * hd_, hd_, o + i0 * ld_,
               ld_, /*accumulate=*/true);
}

void HeadTiles::OutputGradScores(int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* dp) {
  if (!bf16()) {
    Gemm(precision_, {.transpose_b = true}, nq, nk, hd_, d_o_ + i0 * d_o_ld_, d_o_ld_,
         v_ + j0 * in_ld_, in_ld_, dp, kBlk);
    return;
  }
  Bf16PairGemm(nq, nk, hd_pairs_, d_o_rows_ + i0 * hd_pairs_, hd_pairs_, v_t_ + j0, s_len_, dp,
               kBlk, /*accumulate=*/false);
}

void HeadTiles::AddValueGrad(const float* p, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                             float* dv) {
  if (!bf16()) {
    Gemm(precision_, {.transpose_a = true, .beta = 1.0f}, nk, hd_, nq, p, kBlk,
         d_o_ + i0 * d_o_ld_, d_o_ld_, dv + j0 * ld_, ld_);
    return;
  }
  PackPairsDownColumnsTransposed(p, kBlk, nq, nk, tile_, Pairs(nq));
  Bf16PairGemm(nk, hd_, Pairs(nq), tile_, Pairs(nq), d_o_down_ + i0 / 2 * hd_, hd_, dv + j0 * ld_,
               ld_, /*accumulate=*/true);
}

void HeadTiles::AddQueryGrad(const float* ds, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                             float* dq) {
  if (!bf16()) {
    Gemm(precision_, {.beta = 1.0f}, nq, hd_, nk, ds, kBlk, k_ + j0 * in_ld_, in_ld_,
         dq + i0 * ld_, ld_);
    return;
  }
  PackPairsAlongRows(ds, kBlk, nq, nk, tile_, Pairs(nk));
  Bf16PairGemm(nq, hd_, Pairs(nk), tile_, Pairs(nk), k_down_ + j0 / 2 * hd_, hd_, dq + i0 * ld_,
               ld_, /*accumulate=*/true);
}

void HeadTiles::AddKeyGrad(const float* ds, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                           float* dk) {
  if (!bf16()) {
    Gemm(precision_, {.transpose_a = true, .beta = 1.0f}, nk, hd_, nq, ds, kBlk,
         q_ + i0 * in_ld_, in_ld_, dk + j0 * ld_, ld_);
    return;
  }
  PackPairsDownColumnsTransposed(ds, kBlk, nq, nk, tile_, Pairs(nq));
  Bf16PairGemm(nk, hd_, Pairs(nq), tile_, Pairs(nq), q_down_ + i0 / 2 * hd_, hd_, dk + j0 * ld_,
               ld_, /*accumulate=*/true);
}

}  // namespace openmoe
