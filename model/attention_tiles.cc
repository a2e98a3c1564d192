#include "model/attention_tiles.h"

#include <algorithm>

#include "core/bf16_pair_gemm.h"
#include "core/check.h"

namespace openmoe {
namespace {

constexpr int64_t kBlk = kAttentionBlock;
constexpr int64_t kTileWords = kBlk * ((kBlk + 1) / 2);

int64_t Pairs(int64_t n) { return (n + 1) / 2; }

// Words of one packed form of an (S, hd) input (rows: S x hd/2, t: hd/2 x S, down: S/2 x hd).
int64_t FormWords(int64_t s_len, int64_t hd) {
  return std::max(s_len * Pairs(hd), Pairs(s_len) * hd);
}

}  // namespace

int64_t HeadTiles::StorageWords(GemmPrecision precision, int64_t s_len, int64_t hd, bool backward) {
  if (precision != GemmPrecision::kBf16) return 0;
  // Forward: q rows, k t, v down; backward adds v t, k down, q down, dO rows and dO down.
  return (backward ? 8 : 3) * FormWords(s_len, hd) + kTileWords;
}

HeadTiles::HeadTiles(GemmPrecision precision, int64_t s_len, int64_t hd, int64_t out_ld,
                     bool backward, uint32_t* storage)
    : precision_(precision), s_len_(s_len), hd_(hd), ld_(out_ld), backward_(backward) {
  if (!bf16()) return;
  OPENMOE_CHECK(storage != nullptr);
  uint32_t* next = storage;
  auto take = [&](int64_t words) {
    uint32_t* out = next;
    next += words;
    return out;
  };
  const int64_t form = FormWords(s_len, hd);
  q_.rows = take(form);
  k_.t = take(form);
  v_.down = take(form);
  if (backward) {
    v_.t = take(form);
    k_.down = take(form);
    q_.down = take(form);
    d_o_.rows = take(form);
    d_o_.down = take(form);
  }
  tile_ = take(kTileWords);
}

void HeadTiles::Pack(Operand& op, const float* x, int64_t ld) {
  op.x = x;
  op.ld = ld;
  if (!bf16()) return;
  if (op.rows != nullptr) PackPairsAlongRows(x, ld, s_len_, hd_, op.rows, Pairs(hd_));
  if (op.t != nullptr) PackPairsAlongRowsTransposed(x, ld, s_len_, hd_, op.t, s_len_);
  if (op.down != nullptr) PackPairsDownColumns(x, ld, s_len_, hd_, op.down, hd_);
}

void HeadTiles::Bind(const float* q, const float* k, const float* v, int64_t ld, const float* d_o,
                     int64_t d_o_ld) {
  OPENMOE_CHECK(backward_ == (d_o != nullptr));
  Pack(q_, q, ld);
  Pack(k_, k, ld);
  Pack(v_, v, ld);
  if (backward_) Pack(d_o_, d_o, d_o_ld);
}

void HeadTiles::RowsTimesTransposed(const Operand& a, int64_t i0, int64_t nq, const Operand& b,
                                    int64_t j0, int64_t nk, float* out) {
  if (!bf16()) {
    Gemm(precision_, {.transpose_b = true}, nq, nk, hd_, a.x + i0 * a.ld, a.ld, b.x + j0 * b.ld,
         b.ld, out, kBlk);
    return;
  }
  Bf16PairGemm(nq, nk, Pairs(hd_), a.rows + i0 * Pairs(hd_), Pairs(hd_), b.t + j0, s_len_, out,
               kBlk, /*accumulate=*/false);
}

void HeadTiles::AddTileTimes(const float* tile, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                             const Operand& b, float* out) {
  if (!bf16()) {
    Gemm(precision_, {.beta = 1.0f}, nq, hd_, nk, tile, kBlk, b.x + j0 * b.ld, b.ld,
         out + i0 * ld_, ld_);
    return;
  }
  PackPairsAlongRows(tile, kBlk, nq, nk, tile_, Pairs(nk));
  Bf16PairGemm(nq, hd_, Pairs(nk), tile_, Pairs(nk), b.down + j0 / 2 * hd_, hd_, out + i0 * ld_,
               ld_, /*accumulate=*/true);
}

void HeadTiles::AddTileTransposedTimes(const float* tile, int64_t i0, int64_t nq, int64_t j0,
                                       int64_t nk, const Operand& b, float* out) {
  if (!bf16()) {
    Gemm(precision_, {.transpose_a = true, .beta = 1.0f}, nk, hd_, nq, tile, kBlk,
         b.x + i0 * b.ld, b.ld, out + j0 * ld_, ld_);
    return;
  }
  PackPairsDownColumnsTransposed(tile, kBlk, nq, nk, tile_, Pairs(nq));
  Bf16PairGemm(nk, hd_, Pairs(nq), tile_, Pairs(nq), b.down + i0 / 2 * hd_, hd_, out + j0 * ld_,
               ld_, /*accumulate=*/true);
}

void HeadTiles::Scores(int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* s) {
  RowsTimesTransposed(q_, i0, nq, k_, j0, nk, s);
}

void HeadTiles::AddContext(const float* p, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                           float* o) {
  AddTileTimes(p, i0, nq, j0, nk, v_, o);
}

void HeadTiles::OutputGradScores(int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* dp) {
  RowsTimesTransposed(d_o_, i0, nq, v_, j0, nk, dp);
}

void HeadTiles::AddValueGrad(const float* p, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                             float* dv) {
  AddTileTransposedTimes(p, i0, nq, j0, nk, d_o_, dv);
}

void HeadTiles::AddQueryGrad(const float* ds, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                             float* dq) {
  AddTileTimes(ds, i0, nq, j0, nk, k_, dq);
}

void HeadTiles::AddKeyGrad(const float* ds, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                           float* dk) {
  AddTileTransposedTimes(ds, i0, nq, j0, nk, q_, dk);
}

}  // namespace openmoe
