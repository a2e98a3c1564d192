// The checkpoint index of a model piece: for every tensor (parameters, Adafactor factored and
// unfactored state, AdamW m / v) the piece's boxes put each local element where the whole layout
// holds it. The expected place is found independently: each local parameter element's whole
// element from ForEachRun of its ParamInfo box, and from it (rows / columns) the place of each
// Adafactor statistic as the optimizer documents its state (per slice v_row over the local rows,
// then v_col over the local columns, or v in the parameter's layout).
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "launch/checkpoint/index.h"
#include "model/adafactor.h"
#include "model/adamw.h"
#include "model/params.h"

namespace openmoe {
namespace {

// A model group's communicator of `size` ranks that the optimizers only ask for its size here
// (nothing is updated).
class SizeOnlyGroup final : public Communicator {
 public:
  explicit SizeOnlyGroup(int size) : size_(size) {}
  int rank() const override { return 0; }
  int size() const override { return size_; }
  void AllReduceSum(float*, int64_t) override { Fail(); }
  void AllReduceSum(double*, int64_t) override { Fail(); }
  void AllReduceSum(int64_t*, int64_t) override { Fail(); }
  void AllReduceMin(int64_t*, int64_t) override { Fail(); }
  void AllReduceMax(float*, int64_t) override { Fail(); }
  void AllToAll(const int64_t*, int64_t*, int64_t) override { Fail(); }
  void AllToAllV(const float*, const std::vector<int64_t>&, float*,
                 const std::vector<int64_t>&) override {
    Fail();
  }
  void AllToAllV(const uint16_t*, const std::vector<int64_t>&, uint16_t*,
                 const std::vector<int64_t>&) override {
    Fail();
  }
  void Broadcast(std::string*, int) override { Fail(); }
  std::unique_ptr<Communicator> Split(int, int) override {
    Fail();
    return nullptr;
  }
  int LocalSize() override { return 1; }

 private:
  static void Fail() { ADD_FAILURE() << "no collective expected"; }
  int size_;
};

ModelDims Dims() {
  ModelDims d;
  d.vocab_size = d.padded_vocab_size = 64;
  d.num_layers = 2;
  d.d_model = 16;
  d.num_heads = 4;
  d.head_dim = 4;
  d.d_ff = 32;
  d.expert_d_ff = 16;
  d.num_experts = 4;
  d.moe_interval = 2;
  d.extra_dense_ffn = true;
  d.ffn_form = FFN_OPENMOE;
  return d;
}

const LocalTensor& Find(const std::vector<LocalTensor>& tensors, TensorKind kind,
                        const std::string& name) {
  for (const LocalTensor& t : tensors)
    if (t.kind == kind && t.name == name) return t;
  ADD_FAILURE() << "no " << name;
  return tensors.front();
}

// For piece tensor t of kind `kind`, the whole tensor's element (relative to t's experts, as a
// file holds them) of each piece element, from the parameter's element map.
std::vector<int64_t> ExpectedWholeIndex(const LocalTensor& t, const ParamInfo& p,
                                        const ParamLayout& whole_layout, const Adafactor* piece_opt) {
  std::vector<int64_t> param_at(p.size);  // local parameter element -> whole element (all experts)
  ForEachRun(p.box, [&](int64_t b, int64_t w, int64_t n) {
    for (int64_t k = 0; k < n; ++k) param_at[b + k] = w + k;
  });
  const ParamInfo& wp = whole_layout.Get(p.name);
  const int64_t per_expert_whole = wp.size / (p.is_expert ? wp.shape[0] : 1);
  const int64_t first = p.is_expert ? p.first_expert : 0;
  if (t.kind != TENSOR_ADAFACTOR) {
    std::vector<int64_t> out(p.size);
    for (int64_t k = 0; k < p.size; ++k) out[k] = param_at[k] - first * per_expert_whole;
    return out;
  }
  // The piece's slices of this tensor, and their whole rows / cols.
  std::vector<int64_t> out;
  for (const Adafactor::Slice& s : piece_opt->slices()) {
    if (s.param_offset < p.offset || s.param_offset >= p.offset + p.size) continue;
    const int64_t e = (s.param_offset - p.offset) / (s.rows * s.cols);
    const int64_t R = s.global_rows, C = s.global_cols;
    auto whole_of = [&](int64_t i, int64_t j) {
      return param_at[e * s.rows * s.cols + i * s.cols + j] - first * per_expert_whole;
    };
    if (s.factored) {
      for (int64_t i = 0; i < s.rows; ++i) out.push_back(e * (R + C) + whole_of(i, 0) / C % R);
      for (int64_t j = 0; j < s.cols; ++j) out.push_back(e * (R + C) + R + whole_of(0, j) % C);
    } else {
      for (int64_t i = 0; i < s.rows; ++i)
        for (int64_t j = 0; j < s.cols; ++j) out.push_back(whole_of(i, j));
    }
  }
  EXPECT_EQ(static_cast<int64_t>(out.size()), t.size()) << p.name;
  return out;
}

void ExpectBoxesMatch(const ParamLayout& piece, const Optimizer& piece_opt,
                      const ParamLayout& whole, const Optimizer& whole_opt,
                      const std::string& what) {
  const std::vector<LocalTensor> pieces = LocalTensors(piece, &piece_opt);
  const std::vector<LocalTensor> wholes = LocalTensors(whole, &whole_opt);
  ASSERT_EQ(pieces.size(), wholes.size()) << what;
  int split = 0;
  for (const LocalTensor& t : pieces) {
    const ParamInfo& p = piece.Get(t.name);
    const LocalTensor& w = Find(wholes, t.kind, t.name);
    EXPECT_EQ(t.global_shape, w.global_shape) << what << " " << t.name;
    EXPECT_EQ(t.model_piece, p.model_split()) << what << " " << t.name;
    if (!t.model_piece) {
      EXPECT_EQ(t.per_expert, w.per_expert) << what << " " << t.name;
      continue;
    }
    ++split;
    EXPECT_EQ(t.whole_per_expert, w.per_expert) << what << " " << t.name;
    // The whole holds its own index at every element; the piece must pick the expected ones.
    std::vector<float> whole_data(static_cast<size_t>(t.file_size()));
    for (size_t k = 0; k < whole_data.size(); ++k) whole_data[k] = static_cast<float>(k);
    std::vector<float> got(static_cast<size_t>(t.size()), -1.0f);
    CopyWholeToPiece(t, whole_data.data(), got.data());
    const std::vector<int64_t> want = ExpectedWholeIndex(
        t, p, whole,
        t.kind == TENSOR_ADAFACTOR ? dynamic_cast<const Adafactor*>(&piece_opt) : nullptr);
    ASSERT_EQ(want.size(), got.size()) << what << " " << t.name;
    for (size_t k = 0; k < got.size(); ++k)
      ASSERT_EQ(got[k], static_cast<float>(want[k]))
          << what << " " << TensorKindName(t.kind) << " " << t.name << " element " << k;
  }
  EXPECT_GT(split, 10) << what;
}

TEST(CheckpointIndexModelPiece, BoxesPutEveryElementWhereTheWholeLayoutHoldsIt) {
  for (const int64_t parts : {2, 4}) {
    SizeOnlyGroup group(static_cast<int>(parts));
    for (int64_t index = 0; index < parts; ++index) {
      const ParamShard shard = {.first_expert = 2, .num_local_experts = 2, .model_parts = parts,
                                .model_index = index};
      const ParamLayout piece(Dims(), shard);
      const ParamLayout whole(Dims(), {.first_expert = 2, .num_local_experts = 2});
      const std::string what = "piece " + std::to_string(index) + " of " + std::to_string(parts);
      for (const bool factored : {true, false}) {
        AdafactorConfig config;
        config.set_min_dim_size_to_factor(8);
        config.set_factored(factored);
        const Adafactor piece_opt(config, piece, &group), whole_opt(config, whole);
        ExpectBoxesMatch(piece, piece_opt, whole, whole_opt,
                         what + (factored ? " factored" : " unfactored"));
      }
      const AdamW piece_adamw(AdamWConfig(), 0, piece), whole_adamw(AdamWConfig(), 0, whole);
      ExpectBoxesMatch(piece, piece_adamw, whole, whole_adamw, what + " adamw");
    }
  }
}

TEST(CheckpointIndexModelPiece, PiecesTileTheWhole) {
  // Every element of the whole is held by exactly one piece, or (a statistic over a dim that is
  // not split) by every piece.
  const int64_t parts = 4;
  SizeOnlyGroup group(parts);
  AdafactorConfig config;
  config.set_min_dim_size_to_factor(8);
  const ParamLayout piece0(Dims(), {.model_parts = parts, .model_index = 0});
  const Adafactor opt0(config, piece0, &group);
  for (const LocalTensor& t0 : LocalTensors(piece0, &opt0)) {
    if (!t0.model_piece) continue;
    std::vector<int> held(static_cast<size_t>(t0.file_size()), 0);
    for (int64_t q = 0; q < parts; ++q) {
      ForEachPieceRun(PieceOf(t0, q), [&](int64_t, int64_t w, int64_t n) {
        for (int64_t k = 0; k < n; ++k) ++held[w + k];
      });
    }
    for (size_t k = 0; k < held.size(); ++k)
      ASSERT_TRUE(held[k] == 1 || held[k] == parts) << t0.name << " element " << k;
    // Only a factored statistic over an unsplit dim is held by every piece.
    if (!(t0.kind == TENSOR_ADAFACTOR && t0.factored)) {
      for (size_t k = 0; k < held.size(); ++k) ASSERT_EQ(held[k], 1) << t0.name << " element " << k;
    }
  }
}

}  // namespace
}  // namespace openmoe
