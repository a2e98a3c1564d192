// The sharding view and rule table: boxes against a naive multi-index loop, and model pieces of
// every parameter that reassemble the one-piece layout (shapes and initial values).
#include "model/sharding.h"

#include <numeric>

#include "gtest/gtest.h"
#include "model/params.h"

namespace openmoe {
namespace {

TEST(Sharding, BoxRunsMatchANaiveLoop) {
  const ViewBox box{.view = {3, 4, 2, 5}, .begin = {1, 0, 1, 2}, .size = {2, 4, 1, 3}};
  std::vector<float> whole(3 * 4 * 2 * 5);
  std::iota(whole.begin(), whole.end(), 0.0f);
  std::vector<float> got(box.NumElements());
  CopyWholeToBox(box, whole.data(), got.data());
  std::vector<float> want;
  for (int64_t a = 1; a < 3; ++a)
    for (int64_t b = 0; b < 4; ++b)
      for (int64_t c = 1; c < 2; ++c)
        for (int64_t d = 2; d < 5; ++d) want.push_back(static_cast<float>(((a * 4 + b) * 2 + c) * 5 + d));
  EXPECT_EQ(got, want);
  std::vector<float> back(whole.size(), -1.0f);
  CopyBoxToWhole(box, got.data(), back.data());
  for (size_t i = 0; i < whole.size(); ++i) {
    if (back[i] != -1.0f) {
      EXPECT_EQ(back[i], whole[i]);
    }
  }
}

TEST(Sharding, RuleTable) {
  EXPECT_EQ(MeshAxisOf(LogicalAxis::kVocab), MeshAxis::kModel);
  EXPECT_EQ(MeshAxisOf(LogicalAxis::kHeads), MeshAxis::kModel);
  EXPECT_EQ(MeshAxisOf(LogicalAxis::kMlp), MeshAxis::kModel);
  EXPECT_EQ(MeshAxisOf(LogicalAxis::kExpert), MeshAxis::kExpert);
  EXPECT_EQ(MeshAxisOf(LogicalAxis::kEmbed), MeshAxis::kReplicated);
  EXPECT_EQ(MeshAxisOf(LogicalAxis::kRouted), MeshAxis::kReplicated);
}

ModelDims Dims(FfnForm form) {
  ModelDims d;
  d.vocab_size = d.padded_vocab_size = 16;
  d.num_layers = 2;
  d.d_model = 6;
  d.num_heads = 4;
  d.head_dim = 3;
  d.d_ff = 8;
  d.expert_d_ff = 4;
  d.num_experts = 4;
  d.moe_interval = 2;
  d.ffn_form = form;
  return d;
}

// Pieces of every tensor, placed by their boxes, give the whole layout's initial values; the
// OpenMoE wi_0 piece holds columns [j0, j1) and [F + j0, F + j1) (a with its silu(b) partner).
TEST(Sharding, ModelPiecesReassembleTheWholeModel) {
  for (FfnForm form : {FFN_OPENMOE, FFN_SWIGLU}) {
    const ModelDims dims = Dims(form);
    const ParamLayout whole(dims);
    std::vector<float> want(whole.total_size());
    InitParams(whole, 7, want.data());
    for (int64_t parts : {2, 4}) {
      std::vector<std::vector<float>> rebuilt(whole.params().size());
      for (size_t i = 0; i < whole.params().size(); ++i)
        rebuilt[i].assign(whole.params()[i].size, -7.0f);
      for (int64_t index = 0; index < parts; ++index) {
        const ParamLayout piece(dims, {.model_parts = parts, .model_index = index});
        EXPECT_EQ(piece.local_dims().num_heads, 4 / parts);
        EXPECT_EQ(piece.vocab_begin(), index * 16 / parts);
        std::vector<float> got(piece.total_size());
        InitParams(piece, 7, got.data());
        for (size_t i = 0; i < piece.params().size(); ++i) {
          const ParamInfo& p = piece.params()[i];
          ASSERT_EQ(p.global_shape, whole.params()[i].shape) << p.name;
          const bool split = p.name.find("norm") == std::string::npos &&
                             p.name.find("router") == std::string::npos;
          EXPECT_EQ(p.model_split(), split) << p.name;
          CopyBoxToWhole(p.box, got.data() + p.offset, rebuilt[i].data());
        }
        if (form == FFN_OPENMOE) {  // columns of the piece's wi_0: (j0..j1) then (F+j0..F+j1)
          const ParamInfo& p = piece.Get("layers.0.mlp.wi_0");
          const ParamInfo& q = whole.Get("layers.0.mlp.wi_0");
          const int64_t f = 8, fl = f / parts;
          for (int64_t r = 0; r < 6; ++r)
            for (int64_t c = 0; c < 2 * fl; ++c) {
              const int64_t global = c < fl ? index * fl + c : f + index * fl + (c - fl);
              EXPECT_EQ(got[p.offset + r * 2 * fl + c], want[q.offset + r * 2 * f + global]);
            }
        }
      }
      for (size_t i = 0; i < whole.params().size(); ++i) {
        const ParamInfo& q = whole.params()[i];
        for (int64_t k = 0; k < q.size; ++k)
          ASSERT_EQ(rebuilt[i][k], want[q.offset + k]) << q.name << " parts=" << parts << " " << k;
      }
    }
  }
}

// A size-1 mlp (d_ff = 1) leaves a trailing size-1 view dim in the OpenMoE wi_0 view (d, 2, 1).
TEST(Sharding, SizeOneDimsGroupIntoTheShape) {
  ModelDims dims = Dims(FFN_OPENMOE);
  dims.d_ff = 1;
  dims.expert_d_ff = 1;
  const ParamLayout layout(dims);
  EXPECT_EQ(layout.Get("layers.0.mlp.wi_0").shape, (std::vector<int64_t>{6, 2}));
  EXPECT_EQ(layout.Get("layers.1.moe.experts.wi_0").shape, (std::vector<int64_t>{4, 6, 2}));
}

}  // namespace
}  // namespace openmoe
