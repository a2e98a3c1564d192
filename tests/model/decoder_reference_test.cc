// Decoder::Forward's loss, and each of its terms, against a naive reference written here in plain
// double-precision loops from README "Model semantics" and DESIGN.md sections 3-4 alone: embedding
// lookup, RMSNorm, rotate-half RoPE at absolute row positions, causal + segment masked attention,
// the OpenMoE FFN a * silu(b) * (x @ wi_1), top-2 routing with capacity and token-order drops,
// unnormalised gates, the extra dense FFN, final norm, untied logits, cross-entropy, output z-loss,
// load-balance and router z-loss. The model is 2 layers (dense, then MoE), drops happen, row 0
// packs two segments, and heads * head_dim != d_model.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/conditioned_params.h"
#include "tests/testing/tiny_decoder_spec.h"
#include "model/decoder.h"

namespace openmoe {
namespace {

using Mat = std::vector<std::vector<double>>;  // [rows][cols]

constexpr int64_t kRows = 2, kSeq = 8, kTokens = kRows * kSeq;

// The tiny decoder (layer 1 MoE, 4 experts, groups of 8 tokens) with head_dim 6 and the extra
// dense FFN.
JobSpec ReferenceSpec() {
  JobSpec spec = testing::TinyDecoderSpec(FFN_OPENMOE, /*experts=*/4, /*shared=*/0);
  ModelConfig* m = spec.mutable_model();
  m->set_head_dim(6);  // attention width 12 != d_model 8
  m->set_extra_dense_ffn(true);
  spec.mutable_router()->set_capacity_factor(1.0);  // C = max(2, round(8 / 4)) = 2: 16 picks, 8 slots
  spec.mutable_router()->set_min_capacity(2);
  spec.mutable_router()->set_aux_loss_weight(0.3);
  spec.mutable_router()->set_z_loss_weight(0.05);
  spec.mutable_loss()->set_output_z_loss_weight(0.02);
  return spec;
}

Batch ReferenceBatch(int64_t vocab) {
  Batch b;
  b.Resize(kRows, kSeq);
  for (int64_t i = 0; i < kTokens; ++i) {
    b.tokens[i] = static_cast<int32_t>((i * 7 + 3) % vocab);
    b.targets[i] = static_cast<int32_t>((i * 5 + 1) % vocab);
    b.loss_weights[i] = (i % 5 == 4) ? 0.0f : 1.0f;
    b.segment_ids[i] = i < kSeq ? (i < 3 ? 1 : 2) : 1;  // row 0 packs two segments
  }
  return b;
}

// Reads parameters out of the flat buffer by name, as doubles.
struct Weights {
  const ParamLayout& layout;
  const std::vector<float>& params;
  // Element (i, j) of a 2-D tensor, or of expert e's (i, j) for expert tensors.
  double At(const std::string& name, int64_t i, int64_t j, int64_t e = -1) const {
    const ParamInfo& p = layout.Get(name);
    const int64_t cols = p.shape.back();
    int64_t idx = i * cols + j;
    if (e >= 0) idx += e * p.shape[1] * cols;
    return params[p.offset + idx];
  }
  double Vec(const std::string& name, int64_t i) const {
    return params[layout.Get(name).offset + i];
  }
};

Mat MatMul(const Mat& x, const Weights& w, const std::string& name, int64_t col_begin,
           int64_t cols, int64_t expert = -1) {
  Mat y(x.size(), std::vector<double>(cols, 0.0));
  for (size_t t = 0; t < x.size(); ++t)
    for (int64_t c = 0; c < cols; ++c)
      for (size_t i = 0; i < x[t].size(); ++i) y[t][c] += x[t][i] * w.At(name, i, col_begin + c, expert);
  return y;
}

Mat RmsNorm(const Mat& x, const Weights& w, const std::string& scale, double eps) {
  Mat y = x;
  for (size_t t = 0; t < x.size(); ++t) {
    double ms = 0;
    for (double v : x[t]) ms += v * v;
    ms /= static_cast<double>(x[t].size());
    for (size_t i = 0; i < x[t].size(); ++i) y[t][i] = x[t][i] / std::sqrt(ms + eps) * w.Vec(scale, i);
  }
  return y;
}

double Silu(double v) { return v / (1.0 + std::exp(-v)); }

double LogSumExp(const std::vector<double>& v) {
  const double mx = *std::max_element(v.begin(), v.end());
  double s = 0;
  for (double x : v) s += std::exp(x - mx);
  return mx + std::log(s);
}

void AddInto(Mat& x, const Mat& y) {
  for (size_t t = 0; t < x.size(); ++t)
    for (size_t i = 0; i < x[t].size(); ++i) x[t][i] += y[t][i];
}

// Rotate-half RoPE of every head of q (T, H*hd) in place, at position t % S.
void Rope(Mat& q, int64_t heads, int64_t hd, double base) {
  const int64_t half = hd / 2;
  for (int64_t t = 0; t < kTokens; ++t) {
    const double pos = static_cast<double>(t % kSeq);
    for (int64_t h = 0; h < heads; ++h) {
      double* v = q[t].data() + h * hd;
      for (int64_t i = 0; i < half; ++i) {
        const double theta = pos * std::pow(base, -2.0 * i / hd);
        const double x1 = v[i], x2 = v[i + half];
        v[i] = x1 * std::cos(theta) - x2 * std::sin(theta);
        v[i + half] = x2 * std::cos(theta) + x1 * std::sin(theta);
      }
    }
  }
}

Mat Attention(const Mat& x, const Weights& w, const ModelDims& dims, const std::string& l,
              const Batch& batch) {
  const int64_t a = dims.AttentionWidth(), hd = dims.head_dim;
  Mat q = MatMul(x, w, l + "attn.wq", 0, a), k = MatMul(x, w, l + "attn.wk", 0, a),
      v = MatMul(x, w, l + "attn.wv", 0, a);
  Rope(q, dims.num_heads, hd, dims.rope_base);
  Rope(k, dims.num_heads, hd, dims.rope_base);
  Mat o(kTokens, std::vector<double>(a, 0.0));
  for (int64_t t = 0; t < kTokens; ++t) {
    const int64_t row = t / kSeq;
    for (int64_t h = 0; h < dims.num_heads; ++h) {
      std::vector<double> scores;
      std::vector<int64_t> keys;
      for (int64_t s = row * kSeq; s <= t; ++s) {  // causal, inside the row
        if (batch.segment_ids[s] != batch.segment_ids[t]) continue;
        double dot = 0;  // no 1/sqrt(hd): it is folded into wq
        for (int64_t i = 0; i < hd; ++i) dot += q[t][h * hd + i] * k[s][h * hd + i];
        scores.push_back(dot);
        keys.push_back(s);
      }
      const double lse = LogSumExp(scores);
      for (size_t j = 0; j < keys.size(); ++j)
        for (int64_t i = 0; i < hd; ++i)
          o[t][h * hd + i] += std::exp(scores[j] - lse) * v[keys[j]][h * hd + i];
    }
  }
  return MatMul(o, w, l + "attn.wo", 0, dims.d_model);
}

// h = a * silu(b) * (x @ wi_1), y = h @ wo; wi_0 is (d, 2F) with a the first F columns.
Mat OpenMoeFfn(const Mat& x, const Weights& w, const std::string& p, int64_t f, int64_t d,
               int64_t expert = -1) {
  const Mat a = MatMul(x, w, p + "wi_0", 0, f, expert), b = MatMul(x, w, p + "wi_0", f, f, expert),
            c = MatMul(x, w, p + "wi_1", 0, f, expert);
  Mat h(x.size(), std::vector<double>(f));
  for (size_t t = 0; t < x.size(); ++t)
    for (int64_t i = 0; i < f; ++i) h[t][i] = a[t][i] * Silu(b[t][i]) * c[t][i];
  return MatMul(h, w, p + "wo", 0, d, expert);
}

struct RefMoe {
  Mat out;
  double load_balance = 0;  // sum over groups
  double z_loss = 0;        // sum over tokens
  std::vector<int32_t> choice_expert, choice_slot;
  int dropped = 0;
};

RefMoe Moe(const Mat& x, const Weights& w, const ModelDims& dims, const std::string& l,
           int64_t group, int64_t capacity) {
  const int64_t e_count = dims.num_experts, k = 2;
  RefMoe r;
  const Mat logits = MatMul(x, w, l + "moe.router", 0, e_count);
  Mat probs(kTokens, std::vector<double>(e_count));
  for (int64_t t = 0; t < kTokens; ++t) {
    const double lse = LogSumExp(logits[t]);
    r.z_loss += lse * lse;
    for (int64_t e = 0; e < e_count; ++e) probs[t][e] = std::exp(logits[t][e] - lse);
    // Top-2 by probability, ties to the lower expert id.
    int64_t first = 0;
    for (int64_t e = 1; e < e_count; ++e) if (probs[t][e] > probs[t][first]) first = e;
    int64_t second = first == 0 ? 1 : 0;
    for (int64_t e = 0; e < e_count; ++e)
      if (e != first && probs[t][e] > probs[t][second]) second = e;
    r.choice_expert.push_back(static_cast<int32_t>(first));
    r.choice_expert.push_back(static_cast<int32_t>(second));
  }
  r.choice_slot.assign(kTokens * k, -1);
  r.out.assign(kTokens, std::vector<double>(dims.d_model, 0.0));
  for (int64_t g = 0; g < kTokens / group; ++g) {
    std::vector<int64_t> filled(e_count, 0);
    std::vector<double> routed(e_count, 0), prob_sum(e_count, 0);
    for (int64_t j = 0; j < k; ++j) {  // all first choices in token order, then all second
      for (int64_t t = g * group; t < (g + 1) * group; ++t) {
        const int64_t e = r.choice_expert[t * k + j];
        routed[e] += 1;
        if (filled[e] < capacity) r.choice_slot[t * k + j] = static_cast<int32_t>(filled[e]);
        else ++r.dropped;
        ++filled[e];
      }
    }
    for (int64_t t = g * group; t < (g + 1) * group; ++t)
      for (int64_t e = 0; e < e_count; ++e) prob_sum[e] += probs[t][e];
    double lb = 0;
    for (int64_t e = 0; e < e_count; ++e) lb += (routed[e] / group) * (prob_sum[e] / group);
    r.load_balance += e_count * lb;
  }
  for (int64_t t = 0; t < kTokens; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      if (r.choice_slot[t * k + j] < 0) continue;
      const int64_t e = r.choice_expert[t * k + j];
      const Mat y = OpenMoeFfn(Mat{x[t]}, w, l + "moe.experts.", dims.expert_d_ff, dims.d_model, e);
      for (int64_t i = 0; i < dims.d_model; ++i) r.out[t][i] += probs[t][e] * y[0][i];  // raw gate
    }
  }
  return r;
}

TEST(DecoderReference, ForwardLossMatchesANaiveDoublePrecisionModel) {
  const JobSpec spec = ReferenceSpec();
  const ModelDims dims = DimsFromSpec(spec);
  ASSERT_EQ(dims.padded_vocab_size, 32);
  ASSERT_FALSE(dims.IsMoeLayer(0));
  ASSERT_TRUE(dims.IsMoeLayer(1));
  const ParamLayout layout(dims);
  std::vector<float> params(layout.total_size());
  InitParams(layout, /*seed=*/11, params.data());
  // Wider router logits so top-2 margins dwarf fp32 rounding (the reference must pick the same
  // experts); a smaller embedding keeps activations O(1).
  testing::ConditionForRoutingTests(layout, 40.0f, &params);
  const Batch batch = ReferenceBatch(dims.vocab_size);
  double n_targets = 0;
  for (float wt : batch.loss_weights) n_targets += wt;
  const double z_w = spec.loss().output_z_loss_weight(), aux_w = spec.router().aux_loss_weight(),
               rz_w = spec.router().z_loss_weight();
  const int64_t groups = kTokens / spec.router().group_size(), moe_layers = 1;

  // The reference.
  const Weights w{layout, params};
  const double eps = dims.norm_eps;
  Mat x(kTokens, std::vector<double>(dims.d_model));
  for (int64_t t = 0; t < kTokens; ++t)
    for (int64_t i = 0; i < dims.d_model; ++i) x[t][i] = w.At("embedding", batch.tokens[t], i);
  RefMoe moe;
  for (int64_t layer = 0; layer < dims.num_layers; ++layer) {
    const std::string l = "layers." + std::to_string(layer) + ".";
    AddInto(x, Attention(RmsNorm(x, w, l + "attn_norm.scale", eps), w, dims, l, batch));
    if (dims.IsMoeLayer(layer)) {
      moe = Moe(RmsNorm(x, w, l + "moe_norm.scale", eps), w, dims, l, spec.router().group_size(),
                /*capacity=*/2);
      AddInto(x, moe.out);
    }
    AddInto(x, OpenMoeFfn(RmsNorm(x, w, l + "mlp_norm.scale", eps), w, l + "mlp.", dims.d_ff,
                          dims.d_model));
  }
  const Mat logits = MatMul(RmsNorm(x, w, "final_norm.scale", eps), w, "logits", 0,
                            dims.padded_vocab_size);
  double ce = 0, z = 0;
  for (int64_t t = 0; t < kTokens; ++t) {
    const double lse = LogSumExp(logits[t]);  // padded entries are ordinary classes
    ce += batch.loss_weights[t] * (lse - logits[t][batch.targets[t]]);
    z += batch.loss_weights[t] * lse * lse;
  }
  const double want_loss = (ce + z_w * z) / n_targets + aux_w * moe.load_balance / (moe_layers * groups) +
                           rz_w * moe.z_loss / (moe_layers * kTokens);
  ASSERT_GT(moe.dropped, 0) << "capacity must drop assignments for the test to mean something";

  // The model.
  Decoder decoder(layout, RoutingFromSpec(spec, false));
  LossScales scales;
  scales.lm_normalizer = 1.0 / n_targets;
  scales.output_z_weight = z_w;
  scales.load_balance_scale = aux_w / (moe_layers * groups);
  scales.router_z_scale = rz_w / (moe_layers * kTokens);
  const DecoderSums got = decoder.Forward(params.data(), batch, scales);
  const Routing* routing = decoder.routing(1);
  ASSERT_NE(routing, nullptr);
  EXPECT_EQ(routing->capacity, 2);
  EXPECT_EQ(routing->choice_expert, moe.choice_expert);
  EXPECT_EQ(routing->choice_slot, moe.choice_slot);

  auto near = [](double got_v, double want_v, const char* what) {
    EXPECT_NEAR(got_v, want_v, 1e-5 * std::fabs(want_v) + 1e-9) << what;
  };
  near(got.lm.weight, n_targets, "target weight");
  near(got.lm.cross_entropy, ce, "cross-entropy sum");
  near(got.lm.z_loss, z, "output z-loss sum");
  ASSERT_EQ(got.router.size(), 2u);
  near(got.router[1].load_balance, moe.load_balance, "load-balance sum");
  near(got.router[1].z_loss, moe.z_loss, "router z-loss sum");
  EXPECT_EQ(got.router[0].load_balance, 0.0);
  near(got.loss, want_loss, "loss");
  // Each term matters at this tolerance: none is negligible next to the total.
  EXPECT_GT(aux_w * moe.load_balance / groups, 1e-3);
  EXPECT_GT(rz_w * moe.z_loss / kTokens, 1e-3);
  EXPECT_GT(z_w * z / n_targets, 1e-3);
}

}  // namespace
}  // namespace openmoe
