// The tile products of blocked attention for one (row, head): the only part of the attention
// kernel (model/attention.cc) that depends on the GEMM precision.
//
// FP32 runs each product as an OpenBLAS GEMM on strided views of q, k, v and dO. BF16 packs q, k,
// v (and in the backward dO) once per head into the pair layouts of core/bf16_pair_gemm.h, and
// each probability / dS tile once per use, then runs Bf16PairGemm: on AVX512-BF16 a VDPBF16PS
// kernel with no library call, rounded copy or primitive per tile; elsewhere the same products in
// a portable fp32 loop. Both round every operand to bf16 and accumulate in fp32, as Gemm(kBf16).
//
// Shapes: q, k, v and dO are the head's (S, hd) inputs with the leading dimensions given to Bind
// (a head inside a (B*S, H*hd) matrix, or a per-head copy); the outputs o, dq, dk, dv are (S, hd)
// views with the leading dimension given to the constructor. Tiles p, s, dp, ds are (nq, nk) with
// leading dimension kAttentionBlock: rows are queries i0 .. i0+nq, columns keys j0 .. j0+nk, and
// i0, j0 are multiples of kAttentionBlock. One HeadTiles per worker thread; not thread-safe.
#pragma once

#include <cstdint>

#include "core/gemm.h"

namespace openmoe {

// Query and key block edge of the blocked (FlashAttention-2 style) kernel: the (S, S) scores and
// probabilities never exist; each (query block, key block) pair is a kAttentionBlock^2 tile, and key
// blocks entirely above the diagonal or before every query's segment are skipped. 64 keeps the
// per-tile GEMMs (64 x 64 x head_dim) efficient and, for head_dim <= 64, single-threaded inside
// OpenBLAS, so the (b, h) pairs can run on GemmThreads() threads of their own.
inline constexpr int64_t kAttentionBlock = 64;

class HeadTiles {
 public:
  // uint32 words of packed storage one worker needs (0 in FP32).
  static int64_t StorageWords(GemmPrecision precision, int64_t s_len, int64_t hd, bool backward);

  // storage: StorageWords(precision, s_len, hd, backward) words, owned by the caller. out_ld: the
  // outputs' leading dimension.
  HeadTiles(GemmPrecision precision, int64_t s_len, int64_t hd, int64_t out_ld, bool backward,
            uint32_t* storage);

  // The head the next products use: q, k, v with leading dimension ld; d_o (leading dimension
  // d_o_ld) only for a backward HeadTiles.
  void Bind(const float* q, const float* k, const float* v, int64_t ld, const float* d_o = nullptr,
            int64_t d_o_ld = 0);

  // s = q[i0:] k[j0:]^T
  void Scores(int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* s);
  // o[i0:] += p v[j0:]
  void AddContext(const float* p, int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* o);
  // dp = dO[i0:] v[j0:]^T
  void OutputGradScores(int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* dp);
  // dv[j0:] += p^T dO[i0:]
  void AddValueGrad(const float* p, int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* dv);
  // dq[i0:] += ds k[j0:]
  void AddQueryGrad(const float* ds, int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* dq);
  // dk[j0:] += ds^T q[i0:]
  void AddKeyGrad(const float* ds, int64_t i0, int64_t nq, int64_t j0, int64_t nk, float* dk);

 private:
  // One (S, hd) input: its fp32 view and, in BF16, the pair forms the products read ("rows": pairs
  // along hd, an A operand; "t": the same transposed, B = x^T; "down": pairs along S, B = x).
  struct Operand {
    const float* x = nullptr;
    int64_t ld = 0;
    uint32_t *rows = nullptr, *t = nullptr, *down = nullptr;
  };
  bool bf16() const { return precision_ == GemmPrecision::kBf16; }
  // Packs x into the forms `op` has storage for.
  void Pack(Operand& op, const float* x, int64_t ld);
  // out (nq, nk), leading dimension kAttentionBlock = a[i0:] b[j0:]^T.
  void RowsTimesTransposed(const Operand& a, int64_t i0, int64_t nq, const Operand& b, int64_t j0,
                           int64_t nk, float* out);
  // out[i0:] += tile b[j0:]   (tile (nq, nk))
  void AddTileTimes(const float* tile, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                    const Operand& b, float* out);
  // out[j0:] += tile^T b[i0:]   (tile (nq, nk))
  void AddTileTransposedTimes(const float* tile, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                              const Operand& b, float* out);

  GemmPrecision precision_;
  int64_t s_len_, hd_, ld_;  // ld_: the outputs'
  bool backward_;
  Operand q_, k_, v_, d_o_;
  uint32_t* tile_ = nullptr;  // one packed p or ds tile (BF16)
};

}  // namespace openmoe
