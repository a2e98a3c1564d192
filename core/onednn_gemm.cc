#include "core/onednn_gemm.h"

#include <omp.h>

#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

#include "core/bf16.h"
#include "core/check.h"

namespace openmoe {
namespace {

using dnnl::memory;
using Dt = memory::data_type;

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// (precision, m, n, k, transpose_a, transpose_b, lda, ldb, ldc, alpha bits, beta bits, threads)
using Key = std::array<int64_t, 12>;

struct Entry {
  dnnl::matmul primitive;
  memory::desc a_md, b_md, c_md, scratch_md;
  std::string implementation;
};

struct Cache {
  std::mutex mu;
  std::map<Key, std::shared_ptr<const Entry>> entries;
  std::atomic<int64_t> created{0}, hits{0};
};
Cache& TheCache() {
  static Cache* cache = new Cache;  // never destroyed: GEMMs may run during static destruction
  return *cache;
}

// op(X) as a (rows, cols) matrix stored row-major with leading dimension ld, transposed or not.
memory::desc OperandDesc(int64_t rows, int64_t cols, bool transposed, int64_t ld, Dt type) {
  return transposed ? memory::desc({rows, cols}, type, memory::dims{1, ld})
                    : memory::desc({rows, cols}, type, memory::dims{ld, 1});
}

// nullptr when oneDNN has no implementation (allow_empty), e.g. bf16 without AVX-512.
std::shared_ptr<const Entry> Create(GemmPrecision precision, const GemmOp& op, int64_t m, int64_t n,
                                    int64_t k, int64_t lda, int64_t ldb, int64_t ldc) {
  const Dt in = precision == GemmPrecision::kBf16 ? Dt::bf16 : Dt::f32;
  auto entry = std::make_shared<Entry>();
  entry->a_md = OperandDesc(m, k, op.transpose_a, lda, in);
  entry->b_md = OperandDesc(k, n, op.transpose_b, ldb, in);
  entry->c_md = OperandDesc(m, n, false, ldc, Dt::f32);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per call, so calls may overlap
  if (op.alpha != 1.0f) attr.set_output_scales(0, {op.alpha});
  if (op.beta != 0.0f) {
    dnnl::post_ops post;
    post.append_sum(op.beta);  // C = alpha * AB + beta * C
    attr.set_post_ops(post);
  }
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(entry->a_md, entry->b_md, entry->c_md), attr,
                                  Engine(), /*allow_empty=*/true);
  if (!pd) return nullptr;
  entry->primitive = dnnl::matmul(pd);
  entry->scratch_md = pd.scratchpad_desc();
  entry->implementation = pd.impl_info_str();
  return entry;
}

void SyncThreads() {
  // omp_set_num_threads is per calling thread; oneDNN reads omp_get_max_threads() when it
  // partitions work (also at creation, hence the thread count in the key).
  const int want = GemmThreads();
  if (omp_get_max_threads() != want) omp_set_num_threads(want);
}

std::shared_ptr<const Entry> Lookup(GemmPrecision precision, const GemmOp& op, int64_t m, int64_t n,
                                    int64_t k, int64_t lda, int64_t ldb, int64_t ldc) {
  SyncThreads();
  const Key key = {static_cast<int64_t>(precision),
                   m,
                   n,
                   k,
                   op.transpose_a,
                   op.transpose_b,
                   lda,
                   ldb,
                   ldc,
                   std::bit_cast<uint32_t>(op.alpha),
                   std::bit_cast<uint32_t>(op.beta),
                   omp_get_max_threads()};
  Cache& cache = TheCache();
  {
    std::lock_guard<std::mutex> lock(cache.mu);
    auto it = cache.entries.find(key);
    if (it != cache.entries.end()) {
      cache.hits.fetch_add(1, std::memory_order_relaxed);
      return it->second;
    }
  }
  // Create outside the lock (it takes milliseconds); a racing thread may create the same key
  // too, and the first insert wins.
  std::shared_ptr<const Entry> entry = Create(precision, op, m, n, k, lda, ldb, ldc);
  OPENMOE_CHECK_MSG(entry != nullptr, "oneDNN has no %s matmul on this CPU",
                    precision == GemmPrecision::kBf16 ? "bf16" : "f32");
  cache.created.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(cache.mu);
  return cache.entries.emplace(key, std::move(entry)).first->second;
}

// Dense bf16 copy of the (rows, cols) matrix at x with leading dimension ld.
uint16_t* Bf16DenseCopy(const float* x, int64_t rows, int64_t cols, int64_t ld,
                        std::vector<uint16_t>* out) {
  out->resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) FloatToBf16(x + r * ld, out->data() + r * cols, cols);
  return out->data();
}

// A dimension split into at most three pieces: the largest multiple of kBigPiece, then the
// largest multiple of kSmallPiece of the rest, then the rest. Token counts change every step
// (tokens per expert); exact shapes would create a primitive for every count ever seen, these
// pieces only max/kBigPiece + kBigPiece/kSmallPiece + kSmallPiece of them per dimension.
constexpr int64_t kBigPiece = 128, kSmallPiece = 16;
struct Piece {
  int64_t start, size;
};
struct PieceList {
  std::array<Piece, 3> pieces;
  int count = 0;
  const Piece* begin() const { return pieces.data(); }
  const Piece* end() const { return pieces.data() + count; }
};
PieceList Pieces(int64_t d) {
  PieceList out;
  const int64_t big = d - d % kBigPiece, small = (d - big) - (d - big) % kSmallPiece;
  int64_t start = 0;
  for (const int64_t size : {big, small, d - big - small}) {
    if (size > 0) out.pieces[out.count++] = {start, size};
    start += size;
  }
  return out;
}

}  // namespace

bool OneDnnGemmAvailable(GemmPrecision precision) {
  static const bool fp32 =
      Create(GemmPrecision::kFp32, GemmOp{}, 16, 16, 16, 16, 16, 16) != nullptr;
  static const bool bf16 =
      Create(GemmPrecision::kBf16, GemmOp{}, 16, 16, 16, 16, 16, 16) != nullptr;
  return precision == GemmPrecision::kBf16 ? bf16 : fp32;
}

namespace {

// Runs the matmul on A and B as they are in memory (elem bytes per element; bf16 or f32 as the
// precision says), with leading dimensions in elements.
void RunPieces(GemmPrecision precision, const GemmOp& op, int64_t m, int64_t n, int64_t k,
               const char* a_data, int64_t lda, const char* b_data, int64_t ldb, int64_t elem,
               float* c, int64_t ldc) {
  thread_local dnnl::stream* stream = new dnnl::stream(Engine());
  thread_local std::vector<char> scratch;
  // Blocks of C by row and column pieces; the k pieces accumulate into the same block, the first
  // with the caller's beta and the rest with beta 1 (alpha scales every piece).
  for (const Piece rows : Pieces(m)) {
    for (const Piece cols : Pieces(n)) {
      GemmOp piece_op = op;
      for (const Piece inner : Pieces(k)) {
        const int64_t a_offset =
            op.transpose_a ? inner.start * lda + rows.start : rows.start * lda + inner.start;
        const int64_t b_offset =
            op.transpose_b ? cols.start * ldb + inner.start : inner.start * ldb + cols.start;
        const std::shared_ptr<const Entry> entry =
            Lookup(precision, piece_op, rows.size, cols.size, inner.size, lda, ldb, ldc);
        if (scratch.size() < entry->scratch_md.get_size())
          scratch.resize(entry->scratch_md.get_size());
        // oneDNN's memory objects take non-const handles; A and B are only read.
        memory a_mem(entry->a_md, Engine(), const_cast<char*>(a_data + a_offset * elem));
        memory b_mem(entry->b_md, Engine(), const_cast<char*>(b_data + b_offset * elem));
        memory c_mem(entry->c_md, Engine(), c + rows.start * ldc + cols.start);
        memory scratch_mem(entry->scratch_md, Engine(), scratch.data());
        entry->primitive.execute(*stream, {{DNNL_ARG_SRC, a_mem},
                                           {DNNL_ARG_WEIGHTS, b_mem},
                                           {DNNL_ARG_DST, c_mem},
                                           {DNNL_ARG_SCRATCHPAD, scratch_mem}});
        stream->wait();
        piece_op.beta = 1.0f;
      }
    }
  }
}

}  // namespace

void OneDnnGemm(GemmPrecision precision, const GemmOp& op, int64_t m, int64_t n, int64_t k,
                const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  OPENMOE_CHECK(m > 0 && n > 0 && k > 0);
  if (precision != GemmPrecision::kBf16) {
    RunPieces(precision, op, m, n, k, reinterpret_cast<const char*>(a), lda,
              reinterpret_cast<const char*>(b), ldb, sizeof(float), c, ldc);
    return;
  }
  OneDnnGemmBf16(op, m, n, k, {a, lda}, {b, ldb}, c, ldc);
}

void OneDnnGemmBf16(const GemmOp& op, int64_t m, int64_t n, int64_t k, GemmInput a, GemmInput b,
                    float* c, int64_t ldc) {
  OPENMOE_CHECK(m > 0 && n > 0 && k > 0);
  // Stored shapes: A is (M, K) or, transposed, (K, M); B (K, N) or (N, K). Copies are dense.
  thread_local std::vector<uint16_t> a_bf16, b_bf16;
  auto as_bf16 = [](GemmInput x, int64_t rows, int64_t cols, std::vector<uint16_t>* copy) {
    if (x.bf16 != nullptr) return x;
    return GemmInput(Bf16DenseCopy(x.f32, rows, cols, x.ld, copy), cols);
  };
  const GemmInput a16 = as_bf16(a, op.transpose_a ? k : m, op.transpose_a ? m : k, &a_bf16);
  const GemmInput b16 = as_bf16(b, op.transpose_b ? n : k, op.transpose_b ? k : n, &b_bf16);
  RunPieces(GemmPrecision::kBf16, op, m, n, k, reinterpret_cast<const char*>(a16.bf16), a16.ld,
            reinterpret_cast<const char*>(b16.bf16), b16.ld, sizeof(uint16_t), c, ldc);
}

std::string OneDnnGemmImplementation(GemmPrecision precision, const GemmOp& op, int64_t m,
                                     int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc) {
  if (precision == GemmPrecision::kBf16) {  // the dense copies' leading dimensions
    lda = op.transpose_a ? m : k;
    ldb = op.transpose_b ? k : n;
  }
  // The first (largest) piece's primitive: the one that does most of the work.
  return Lookup(precision, op, Pieces(m).begin()->size, Pieces(n).begin()->size,
                Pieces(k).begin()->size, lda, ldb, ldc)
      ->implementation;
}

OneDnnGemmCacheStats GetOneDnnGemmCacheStats() {
  Cache& cache = TheCache();
  return {cache.created.load(), cache.hits.load()};
}

}  // namespace openmoe
