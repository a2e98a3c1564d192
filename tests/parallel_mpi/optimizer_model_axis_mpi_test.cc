// The optimizers on the model axis: a model piece's update, with its statistics reduced over the
// model group, is the whole layout's update of that piece. The reference is the whole layout
// stepped alone on this rank (no communication); pieces are matched to it element by element
// through ForEachRun of each parameter's box (which whole element each local one is).
//
// The model is small but covers every case: column-split matrices (wq/wk/wv by heads, the logits
// by vocabulary, the OpenMoE wi_0 pair (d, 2F) whose piece holds [a | b] columns, wi_1), row-split
// ones (wo by heads, the embedding by vocabulary, mlp.wo, the experts' wo), experts (split by mlp,
// and on 4 ranks with 2 pieces also sharded over the two model groups), replicated ones (norm
// scales, routers). min_dim_size_to_factor 16 factors most matrices, including wq whose piece of
// 4 (32 x 8) would not be factored on its own; `factored: false` makes every split tensor
// unfactored. Clipping (threshold 1) and parameter scale are on; gradients grow x4 per step on
// every other tensor so that some updates clip.
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/adafactor.h"
#include "model/adamw.h"
#include "model/params.h"
#include "parallel/communicator.h"
#include "tests/testing/grad_check.h"

namespace openmoe {
namespace {

ModelDims Dims() {
  ModelDims d;
  d.vocab_size = d.padded_vocab_size = 64;
  d.num_layers = 2;
  d.d_model = 32;
  d.num_heads = 4;
  d.head_dim = 8;
  d.d_ff = 16;
  d.expert_d_ff = 16;
  d.num_experts = 4;
  d.moe_interval = 2;  // layer 1 is MoE, with the extra dense FFN
  d.extra_dense_ffn = true;
  d.ffn_form = FFN_OPENMOE;
  return d;
}

// For each element of a piece layout's flat buffer (padding: -1), the whole layout's element of
// the same global tensor element.
std::vector<int64_t> WholeIndexOf(const ParamLayout& piece, const ParamLayout& whole) {
  std::vector<int64_t> at(piece.total_size(), -1);
  for (const ParamInfo& p : piece.params()) {
    const int64_t base = whole.Get(p.name).offset;
    ForEachRun(p.box, [&](int64_t b, int64_t w, int64_t n) {
      for (int64_t k = 0; k < n; ++k) at[p.offset + b + k] = base + w + k;
    });
  }
  return at;
}

// The matrix geometry of a tensor of the whole layout: per expert (or whole) rows x cols.
struct Matrix {
  int64_t rows = 1, cols = 1;
};
Matrix MatrixOf(const ParamInfo& p) {
  const size_t g = p.global_shape.size();
  const int matrix_rank = static_cast<int>(g) - (p.is_expert ? 1 : 0);
  return {matrix_rank == 2 ? p.global_shape[g - 2] : 1, p.global_shape[g - 1]};
}

// Gradients of the whole layout for `step`: N(0, 1) times a growth per tensor and per-row and
// per-column factors, so that row and column statistics are far from flat and a statistic taken
// over one piece only would be visibly wrong.
std::vector<float> WholeGrads(const ParamLayout& whole, int step) {
  std::vector<float> g(whole.total_size(), 0.0f);
  testing::FillNormal(g.data(), whole.total_size(), 1.0, 100 + step);
  for (size_t t = 0; t < whole.params().size(); ++t) {
    const ParamInfo& p = whole.params()[t];
    const Matrix m = MatrixOf(p);
    const float growth = static_cast<float>(std::pow(t % 2 ? 4.0 : 0.25, step));
    for (int64_t k = 0; k < p.size; ++k) {
      const int64_t row = k / m.cols % m.rows, col = k % m.cols;
      g[p.offset + k] *= growth * (1 + row % 3) * (1 + 2 * (col % 4 == 1));
    }
  }
  return g;
}

double Norm(const std::vector<float>& g) {
  double sq = 0;
  for (float x : g) sq += static_cast<double>(x) * x;
  return std::sqrt(sq);
}

struct Pieces {
  int64_t parts = 1, index = 0;
  ParamShard shard;
  std::unique_ptr<Communicator> group;
};

// This rank's piece when the world is cut into model groups of `parts` ranks; with several groups,
// each holds its share of the experts (as the mesh gives a shard per group).
Pieces MakePieces(Communicator& world, int64_t parts) {
  Pieces p;
  p.parts = parts;
  p.index = world.rank() % parts;
  const int64_t groups = world.size() / parts, g = world.rank() / parts;
  const int64_t experts = Dims().num_experts / groups;
  p.shard = {.first_expert = g * experts, .num_local_experts = experts, .model_parts = parts,
             .model_index = p.index};
  p.group = world.Split(static_cast<int>(g), world.rank());
  return p;
}

// Steps the whole layout alone and the piece over its group for 3 steps, and compares the piece's
// parameters and state with the whole run's. state_at maps a piece state element to the whole
// state's (or -1 for padding).
void ExpectPieceMatchesWhole(Optimizer& whole_opt, Optimizer& piece_opt, const ParamLayout& whole,
                             const ParamLayout& piece, const std::vector<int64_t>& state_at,
                             const std::string& what) {
  const std::vector<int64_t> at = WholeIndexOf(piece, whole);
  std::vector<float> whole_params(whole.total_size()), params(piece.total_size());
  InitParams(whole, 7, whole_params.data());
  InitParams(piece, 7, params.data());
  for (int64_t k = 0; k < piece.total_size(); ++k) {
    if (at[k] >= 0) {
      ASSERT_EQ(params[k], whole_params[at[k]]) << what << ": init of element " << k;
    }
  }
  const std::vector<float> initial = whole_params;
  for (int step = 0; step < 3; ++step) {
    const std::vector<float> whole_grads = WholeGrads(whole, step);
    std::vector<float> grads(piece.total_size(), 0.0f);
    for (int64_t k = 0; k < piece.total_size(); ++k)
      if (at[k] >= 0) grads[k] = whole_grads[at[k]];
    const double norm = Norm(whole_grads), lr = 0.01 * (step + 1);
    whole_opt.Update(step, lr, whole_params.data(), whole_grads.data(), norm);
    piece_opt.Update(step, lr, params.data(), grads.data(), norm);
    int64_t checked = 0;
    for (const ParamInfo& p : piece.params()) {
      for (int64_t k = p.offset; k < p.offset + p.size; ++k, ++checked) {
        const double expected = whole_params[at[k]];
        const double moved = expected - initial[at[k]];
        ASSERT_NEAR(params[k], expected, 1e-6 * std::fabs(moved) + 2.5e-7 * std::fabs(expected))
            << what << ": " << p.name << " local element " << k - p.offset << " step " << step;
      }
    }
    EXPECT_GT(checked, 5000) << what;
    ASSERT_EQ(static_cast<int64_t>(state_at.size()), piece_opt.state().size()) << what;
    for (int64_t k = 0; k < piece_opt.state().size(); ++k) {
      if (state_at[k] < 0) continue;
      const float expected = whole_opt.state()[state_at[k]];
      ASSERT_NEAR(piece_opt.state()[k], expected, 1e-6 * std::fabs(expected) + 1e-30)
          << what << ": state element " << k << " step " << step;
    }
  }
}

// Adafactor state: slice by slice, each local row and column is its whole matrix's row / column
// (read off the element map), v_row and v_col or v as the optimizer documents.
std::vector<int64_t> AdafactorStateMap(const Adafactor& piece_opt, const Adafactor& whole_opt,
                                       const ParamLayout& piece, const ParamLayout& whole) {
  const std::vector<int64_t> at = WholeIndexOf(piece, whole);
  // The whole optimizer's slice holding whole element w.
  std::map<int64_t, const Adafactor::Slice*> whole_slices;
  for (const Adafactor::Slice& s : whole_opt.slices()) whole_slices[s.param_offset] = &s;
  auto whole_slice_of = [&](int64_t w) { return std::prev(whole_slices.upper_bound(w))->second; };
  std::vector<int64_t> out(piece_opt.state().size(), -1);
  for (const Adafactor::Slice& s : piece_opt.slices()) {
    for (int64_t i = 0; i < s.rows; ++i) {
      for (int64_t j = 0; j < s.cols; ++j) {
        const int64_t w = at[s.param_offset + i * s.cols + j];
        const Adafactor::Slice& ws = *whole_slice_of(w);
        EXPECT_EQ(ws.factored, s.factored);
        EXPECT_EQ(ws.rows, s.global_rows);
        EXPECT_EQ(ws.cols, s.global_cols);
        const int64_t wi = (w - ws.param_offset) / ws.cols, wj = (w - ws.param_offset) % ws.cols;
        if (s.factored) {
          out[s.state_offset + i] = ws.state_offset + wi;
          out[s.state_offset + s.rows + j] = ws.state_offset + ws.rows + wj;
        } else {
          out[s.state_offset + i * s.cols + j] = ws.state_offset + wi * ws.cols + wj;
        }
      }
    }
  }
  return out;
}

class OptimizerModelAxisMpi : public ::testing::Test {
 protected:
  void SetUp() override { world_ = MakeWorldCommunicator(); }
  // 2 pieces, and on 4 ranks also 4.
  std::vector<int64_t> PartCounts() const {
    std::vector<int64_t> parts;
    for (int64_t p : {2, 4})
      if (world_->size() % p == 0) parts.push_back(p);
    return parts;
  }
  std::unique_ptr<Communicator> world_;
};

TEST_F(OptimizerModelAxisMpi, AdafactorPieceUpdateIsTheWholeUpdate) {
  for (const bool factored : {true, false}) {
    for (const int64_t parts : PartCounts()) {
      Pieces pieces = MakePieces(*world_, parts);
      AdafactorConfig config;
      config.set_factored(factored);
      config.set_min_dim_size_to_factor(16);
      config.set_global_norm_clip(factored ? 0.0 : 50.0);  // the global norm, when on
      ASSERT_GT(config.clipping_threshold(), 0);
      ASSERT_TRUE(config.multiply_by_parameter_scale());
      const ParamLayout whole(Dims());
      const ParamLayout piece(Dims(), pieces.shard);
      Adafactor whole_opt(config, whole);
      Adafactor piece_opt(config, piece, pieces.group.get());
      int splits[3] = {0, 0, 0}, factored_splits = 0;
      for (const Adafactor::Slice& s : piece_opt.slices()) {
        ++splits[static_cast<int>(s.split)];
        factored_splits += s.factored && s.split != Adafactor::Split::kNone;
      }
      // Every kind of slice is there: replicated, row-split and column-split.
      EXPECT_GT(splits[0], 0);
      EXPECT_GT(splits[1], 0);
      EXPECT_GT(splits[2], 0);
      EXPECT_EQ(factored_splits > 0, factored);
      const std::string what = std::string(factored ? "factored" : "unfactored") + " parts " +
                               std::to_string(parts) + " piece " + std::to_string(pieces.index);
      ExpectPieceMatchesWhole(whole_opt, piece_opt, whole, piece,
                              AdafactorStateMap(piece_opt, whole_opt, piece, whole), what);
    }
  }
}

TEST_F(OptimizerModelAxisMpi, WqIsFactoredOnItsGlobalDimsAlthoughItsPieceIsNarrow) {
  if (world_->size() % 4 != 0) GTEST_SKIP() << "needs 4 ranks";
  Pieces pieces = MakePieces(*world_, 4);
  AdafactorConfig config;
  config.set_min_dim_size_to_factor(16);
  const ParamLayout piece(Dims(), pieces.shard);
  const Adafactor opt(config, piece, pieces.group.get());
  const ParamInfo& wq = piece.Get("layers.0.attn.wq");
  for (const Adafactor::Slice& s : opt.slices()) {
    if (s.param_offset != wq.offset) continue;
    EXPECT_EQ(s.cols, 8);
    EXPECT_EQ(s.global_cols, 32);
    EXPECT_EQ(s.split, Adafactor::Split::kCols);
    EXPECT_TRUE(s.factored);
    return;
  }
  ADD_FAILURE() << "no slice for wq";
}

TEST_F(OptimizerModelAxisMpi, AdamWPieceUpdateIsTheWholeUpdate) {
  for (const int64_t parts : PartCounts()) {
    Pieces pieces = MakePieces(*world_, parts);
    AdamWConfig config;
    config.set_weight_decay(0.1);
    const ParamLayout whole(Dims());
    const ParamLayout piece(Dims(), pieces.shard);
    AdamW whole_opt(config, 50.0, whole);
    AdamW piece_opt(config, 50.0, piece);
    // m and v have the parameters' layout.
    const std::vector<int64_t> at = WholeIndexOf(piece, whole);
    std::vector<int64_t> state_at(2 * piece.total_size(), -1);
    for (int64_t k = 0; k < piece.total_size(); ++k) {
      if (at[k] < 0) continue;
      state_at[k] = at[k];
      state_at[piece.total_size() + k] = whole.total_size() + at[k];
    }
    ExpectPieceMatchesWhole(whole_opt, piece_opt, whole, piece, state_at,
                            "adamw parts " + std::to_string(parts));
  }
}

}  // namespace
}  // namespace openmoe
