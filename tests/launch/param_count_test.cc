// Parameter counts, FLOPs and memory per chip against closed forms written out from the model
// dimensions, independently of ParamLayout.
#include "model/param_count.h"

#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "model/config.h"
#include "model/params.h"

namespace openmoe {
namespace {

std::string ConfigPath(const std::string& name) {
  // tests/launch/param_count_test.cc -> repository root.
  const std::filesystem::path root =
      std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
  return (root / "launch" / "configs" / name).string();
}

JobSpec LoadConfig(const std::string& name, const std::vector<std::string>& sets = {}) {
  auto spec = LoadJob({ConfigPath(name)}, sets);
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? *spec : JobSpec();
}

// Every count written out from the spec's fields.
struct Expected {
  int64_t embedding, attention, norms, dense_ffn, experts, extra_ffn, router, logits;
  int64_t experts_activated;
  int64_t shared_experts;  // every token uses them: activated = total
  int64_t total() const {
    return embedding + attention + norms + dense_ffn + experts + extra_ffn + router + logits +
           shared_experts;
  }
  int64_t activated() const { return total() - experts + experts_activated; }
};

Expected ClosedForm(const JobSpec& spec) {
  const ModelConfig& m = spec.model();
  const int64_t pad = m.vocab_pad_multiple();
  const int64_t V = (m.vocab_size() + pad - 1) / pad * pad;
  const int64_t L = m.num_layers(), d = m.d_model(), H = m.num_heads(), hd = m.head_dim();
  const int64_t F = m.d_ff(), E = m.num_experts(), k = spec.router().top_k();
  const int64_t EF = m.expert_d_ff() > 0 ? m.expert_d_ff() : F;
  int64_t moe_layers = 0;
  for (int64_t i = 0; i < L; ++i) moe_layers += (E > 0 && (i + 1) % m.moe_interval() == 0);
  // FFN_OPENMOE: wi_0 is d x 2F, wi_1 d x F, wo F x d: 4 d F. FFN_SWIGLU: 3 d F.
  const int64_t ffn_mult = m.ffn_form() == FFN_OPENMOE ? 4 : 3;
  const int64_t ffn = ffn_mult * d * F, expert = ffn_mult * d * EF;
  const int64_t extra_layers = m.extra_dense_ffn() ? moe_layers : 0;
  Expected e;
  e.embedding = V * d;
  e.logits = d * V;
  e.attention = L * 4 * d * H * hd;
  // attn_norm per layer, moe_norm per MoE layer, mlp_norm per dense or extra FFN, final norm.
  e.norms = (L + moe_layers + (L - moe_layers) + extra_layers + 1) * d;
  e.dense_ffn = (L - moe_layers) * ffn;
  e.extra_ffn = extra_layers * ffn;
  e.experts = moe_layers * E * expert;
  e.experts_activated = moe_layers * k * expert;
  e.router = moe_layers * d * E;
  // model.num_shared_experts: each a whole expert in every MoE layer.
  e.shared_experts = moe_layers * m.num_shared_experts() * expert;
  return e;
}

void ExpectCountsMatch(const JobSpec& spec) {
  SCOPED_TRACE(spec.model().name());
  const Expected e = ClosedForm(spec);
  const ParamLayout layout(DimsFromSpec(spec));
  const ParamCounts c = CountParams(layout);
  EXPECT_EQ(c[Component::kEmbedding].total, e.embedding);
  EXPECT_EQ(c[Component::kAttention].total, e.attention);
  EXPECT_EQ(c[Component::kNorm].total, e.norms);
  EXPECT_EQ(c[Component::kDenseFfn].total, e.dense_ffn);
  EXPECT_EQ(c[Component::kExperts].total, e.experts);
  EXPECT_EQ(c[Component::kExtraFfn].total, e.extra_ffn);
  EXPECT_EQ(c[Component::kRouter].total, e.router);
  EXPECT_EQ(c[Component::kLogits].total, e.logits);
  EXPECT_EQ(c[Component::kSharedExperts].total, e.shared_experts);
  EXPECT_EQ(c[Component::kSharedExperts].activated, e.shared_experts);
  EXPECT_EQ(c[Component::kExperts].activated, e.experts_activated);
  EXPECT_EQ(c[Component::kAttention].activated, e.attention);
  EXPECT_EQ(c[Component::kEmbedding].activated, e.embedding);
  EXPECT_EQ(c.total, e.total());
  EXPECT_EQ(c.activated, e.activated());
  EXPECT_EQ(c.non_embedding_total, e.total() - e.embedding);
  EXPECT_EQ(c.non_embedding_activated, e.activated() - e.embedding);
  EXPECT_EQ(c.expert_total, e.experts);
  EXPECT_EQ(c.activated_matmul, e.activated() - e.embedding - e.norms);

  const int64_t S = spec.train().seq_len();
  const TrainingFlops f = TrainingFlopsPerToken(layout, S);
  const double matmul = 6.0 * static_cast<double>(e.activated() - e.embedding - e.norms);
  const double attention = 12.0 * spec.model().num_layers() * spec.model().num_heads() *
                           spec.model().head_dim() * static_cast<double>(S);
  EXPECT_DOUBLE_EQ(f.matmul, matmul);
  EXPECT_DOUBLE_EQ(f.attention, attention);
  EXPECT_DOUBLE_EQ(f.total, matmul + attention);
}

TEST(ParamCountTest, OpenMoe8bMatchesClosedForm) {
  const JobSpec spec = LoadConfig("openmoe_8b_32e.pbtxt");
  ExpectCountsMatch(spec);
  // The same numbers spelled out: V=256384, d=2048, L=24, 24 heads x 128, F=8192, E=32,
  // MoE layers 5, 11, 17, 23.
  const ParamCounts c = CountParams(ParamLayout(DimsFromSpec(spec)));
  EXPECT_EQ(c[Component::kEmbedding].total, 256384LL * 2048);
  EXPECT_EQ(c[Component::kAttention].total, 24LL * 4 * 2048 * 24 * 128);
  EXPECT_EQ(c[Component::kExperts].total, 4LL * 32 * 4 * 2048 * 8192);
  EXPECT_EQ(c[Component::kExperts].activated, 4LL * 2 * 4 * 2048 * 8192);
  EXPECT_EQ(c[Component::kDenseFfn].total, 20LL * 4 * 2048 * 8192);
  EXPECT_EQ(c[Component::kExtraFfn].total, 4LL * 4 * 2048 * 8192);
  EXPECT_EQ(c[Component::kRouter].total, 4LL * 2048 * 32);
}

TEST(ParamCountTest, EveryReferenceConfigMatchesClosedForm) {
  for (const char* name : {"openmoe_base_16e.pbtxt", "openmoe_34b_32e.pbtxt",
                           "openllama_base.pbtxt", "tiny.pbtxt", "bench_small.pbtxt"}) {
    ExpectCountsMatch(LoadConfig(name));
  }
}

TEST(ParamCountTest, VariantsMatchClosedForm) {
  ExpectCountsMatch(LoadConfig("openmoe_base_16e.pbtxt", {"model.ffn_form=FFN_SWIGLU"}));
  ExpectCountsMatch(LoadConfig("openmoe_base_16e.pbtxt", {"model.extra_dense_ffn=false"}));
  ExpectCountsMatch(LoadConfig("tiny.pbtxt", {"model.expert_d_ff=96", "router.top_k=1",
                                              "model.moe_interval=1", "model.vocab_size=500"}));
}

// Shared experts (fine-grained: expert_d_ff a quarter of d_ff): a shared expert counts exactly
// 4 x d_model x expert_d_ff parameters per MoE layer in the OpenMoE form (wi_0 is d x 2Fe, wi_1
// d x Fe, wo Fe x d) and 3 x in the SwiGLU form, in the total and in the activated counts.
TEST(ParamCountTest, SharedExpertsMatchClosedForm) {
  const std::vector<std::string> shared = {"model.num_shared_experts=2", "model.expert_d_ff=2048"};
  const JobSpec openmoe = LoadConfig("openmoe_8b_32e.pbtxt", shared);
  ExpectCountsMatch(openmoe);
  const ParamCounts c = CountParams(ParamLayout(DimsFromSpec(openmoe)));
  const ParamCounts none = CountParams(
      ParamLayout(DimsFromSpec(LoadConfig("openmoe_8b_32e.pbtxt", {"model.expert_d_ff=2048"}))));
  // 4 MoE layers x 2 shared experts x 4 x 2048 x 2048.
  EXPECT_EQ(c[Component::kSharedExperts].total, 4LL * 2 * 4 * 2048 * 2048);
  EXPECT_EQ(c[Component::kSharedExperts].activated, 4LL * 2 * 4 * 2048 * 2048);
  EXPECT_EQ(c.total - none.total, 4LL * 2 * 4 * 2048 * 2048);
  EXPECT_EQ(c.activated - none.activated, 4LL * 2 * 4 * 2048 * 2048);
  EXPECT_EQ(c.expert_total, none.expert_total);  // not expert tensors

  std::vector<std::string> swiglu = shared;
  swiglu.push_back("model.ffn_form=FFN_SWIGLU");
  const JobSpec plain = LoadConfig("openmoe_8b_32e.pbtxt", swiglu);
  ExpectCountsMatch(plain);
  EXPECT_EQ(CountParams(ParamLayout(DimsFromSpec(plain)))[Component::kSharedExperts].total,
            4LL * 2 * 3 * 2048 * 2048);
  ExpectCountsMatch(LoadConfig("tiny.pbtxt", {"model.num_shared_experts=3", "model.expert_d_ff=32",
                                              "model.extra_dense_ffn=false"}));
}

// A rank under expert parallelism holds a shard of the experts (train_step_bench passes the
// trainer's layout): the FLOPs per token are still the whole model's closed form.
TEST(ParamCountTest, FlopsOfAShardAreTheWholeModels) {
  const JobSpec spec = LoadConfig("bench_small.pbtxt");
  const Expected e = ClosedForm(spec);
  const int64_t S = spec.train().seq_len();
  const double whole = 6.0 * static_cast<double>(e.activated() - e.embedding - e.norms) +
                       12.0 * spec.model().num_layers() * spec.model().num_heads() *
                           spec.model().head_dim() * static_cast<double>(S);
  for (const ParamShard shard : {ParamShard{0, 2}, ParamShard{6, 2}, ParamShard{4, 4}}) {
    const ParamLayout part(DimsFromSpec(spec), shard);
    EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(part, S).total, whole) << shard.first_expert;
  }
}

TEST(ParamCountTest, DenseModelActivatesEverything) {
  const JobSpec spec = LoadConfig("openllama_base.pbtxt");
  const ParamCounts c = CountParams(ParamLayout(DimsFromSpec(spec)));
  EXPECT_EQ(c.activated, c.total);
  EXPECT_EQ(c[Component::kExperts].total, 0);
  EXPECT_EQ(c[Component::kRouter].total, 0);
  // OpenLLaMA-base is OpenMoE-Base without its experts, routers, MoE norms and extra FFNs, and
  // with dense FFNs in the 3 former MoE layers instead.
  const ParamCounts moe =
      CountParams(ParamLayout(DimsFromSpec(LoadConfig("openmoe_base_16e.pbtxt"))));
  EXPECT_EQ(c.total,
            moe.total - moe[Component::kExperts].total - moe[Component::kRouter].total - 3 * 768);
}

TEST(ParamCountTest, MemoryPerChipMatchesClosedFormFor8b) {
  const JobSpec spec = LoadConfig("openmoe_8b_32e.pbtxt");
  const Expected e = ClosedForm(spec);
  const ParamLayout layout(DimsFromSpec(spec));
  const int64_t ep = spec.mesh().expert_parallel();
  const ChipMemory mem = MemoryPerChip(layout, spec.optimizer(), ep);
  EXPECT_EQ(mem.params, e.total() - e.experts + e.experts / ep);
  EXPECT_EQ(mem.params_bytes, 4 * mem.params);
  EXPECT_EQ(mem.grads_bytes, 4 * mem.params);

  // Adafactor: every matrix here has both dims >= 128 and is factored (rows + cols), except the
  // routers (2048 x 32: 32 < 128, one value per element); norm scales are vectors.
  const int64_t V = 256384, d = 2048, A = 24 * 128, F = 8192, E = 32, L = 24, moe = 4;
  const int64_t ffn_state = (d + 2 * F) + (d + F) + (F + d);
  int64_t state = (V + d) + (d + V);     // embedding, logits
  state += L * (3 * (d + A) + (A + d));  // wq wk wv (d x A), wo (A x d)
  state += (L - moe + moe) * ffn_state;  // dense FFNs and extra FFNs
  state += moe * (E / ep) * ffn_state;   // local experts, each factored on its own
  state += moe * d * E;                  // routers, unfactored
  state += e.norms;                      // vectors
  EXPECT_EQ(mem.optimizer_state, state);
  EXPECT_EQ(mem.optimizer_bytes, 4 * state);
  EXPECT_EQ(mem.total_bytes, mem.params_bytes + mem.grads_bytes + mem.optimizer_bytes);

  // Unfactored, the state is one value per parameter.
  AdafactorConfig unfactored = spec.optimizer();
  unfactored.set_factored(false);
  EXPECT_EQ(MemoryPerChip(layout, unfactored, ep).optimizer_state, mem.params);
  // One chip holding every expert.
  EXPECT_EQ(MemoryPerChip(layout, spec.optimizer(), 1).params, e.total());
}

TEST(ParamCountTest, TinyAdafactorStateIsUnfactoredBelowMinDim) {
  // tiny: d_model 64 < 128, so no matrix is factored; the state equals the parameters held.
  const JobSpec spec = LoadConfig("tiny.pbtxt");
  const ParamLayout layout(DimsFromSpec(spec));
  const ChipMemory mem = MemoryPerChip(layout, spec.optimizer(), spec.mesh().expert_parallel());
  EXPECT_EQ(mem.optimizer_state, mem.params);
}

}  // namespace
}  // namespace openmoe
