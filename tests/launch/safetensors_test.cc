// safetensors: the on-disk format byte by byte, files as other tools write them, malformed files,
// and export then import giving identical parameters (whole model and expert shards), including
// checkpoint.init_from_safetensors.
#include "launch/checkpoint/safetensors.h"

#include <cstring>

#include "gtest/gtest.h"
#include "launch/checkpoint/index.h"
#include "launch/checkpoint/session.h"
#include "launch/checkpoint/writer.h"
#include "launch/checkpoint/export.h"
#include "model/config.h"
#include "tests/launch/checkpoint_test_util.h"

namespace openmoe {
namespace {

using testing::CheckpointJob;
using testing::MakeTrainer;
using testing::ReadBytes;
using testing::ScratchDir;
using testing::WriteBytes;

std::string LengthPrefixed(const std::string& header) {
  std::string out(8, '\0');
  for (int b = 0; b < 8; ++b)
    out[b] = static_cast<char>(static_cast<uint64_t>(header.size()) >> (8 * b));
  return out + header;
}

TEST(Safetensors, WritesTheDocumentedLayout) {
  ScratchDir dir;
  const std::string path = dir.Sub("a.safetensors");
  auto w = SafetensorsWriter::Create(path, {{"x", {2, 3}}, {"y", {4}}},
                                     {{"note", "a \"quoted\"\nline é"}});
  ASSERT_TRUE(w.ok()) << w.status();
  const float x[6] = {1, 2, 3, 4, 5, 6}, y[4] = {-1, -2, -3, -4};
  ASSERT_TRUE((*w)->Append(x, 4).ok());
  ASSERT_TRUE((*w)->Append(x + 4, 2).ok());  // a tensor may come in pieces
  ASSERT_TRUE((*w)->Append(y, 4).ok());
  ASSERT_TRUE((*w)->Close().ok());

  const std::string bytes = ReadBytes(path);
  uint64_t n = 0;
  for (int b = 7; b >= 0; --b) n = n << 8 | static_cast<unsigned char>(bytes[b]);
  EXPECT_EQ((8 + n) % 8, 0u) << "data starts 8-byte aligned";
  const std::string header = bytes.substr(8, n);
  EXPECT_NE(header.find("\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"),
            std::string::npos)
      << header;
  EXPECT_NE(header.find("\"y\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[24,40]}"),
            std::string::npos)
      << header;
  ASSERT_EQ(bytes.size(), 8 + n + 40);
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n, x, 24), 0);
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + n + 24, y, 16), 0);

  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->metadata().at("note"), "a \"quoted\"\nline é");
  ASSERT_EQ(f->tensors().size(), 2u);
  float back[3];
  ASSERT_TRUE(f->ReadF32(*f->Find("x"), 2, 3, back).ok());
  EXPECT_EQ(back[0], 3);
  EXPECT_EQ(back[2], 5);
}

TEST(Safetensors, ReadsFilesAsOtherToolsWriteThem) {
  ScratchDir dir;
  // Tensors out of order, a BF16 tensor, escapes and whitespace, no metadata.
  const std::string header =
      "{ \"b\\u00e9\": {\"dtype\":\"F32\", \"shape\":[2], \"data_offsets\":[4, 12]},\n"
      "  \"h\": {\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]} }";
  std::string data(12, '\0');
  const float v[2] = {0.5f, -7.0f};
  std::memcpy(data.data() + 4, v, 8);
  WriteBytes(dir.Sub("o.safetensors"), LengthPrefixed(header) + data);
  auto f = SafetensorsFile::Open(dir.Sub("o.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status();
  const SafetensorsEntry* b = f->Find("b\xc3\xa9");
  ASSERT_NE(b, nullptr);
  float back[2];
  ASSERT_TRUE(f->ReadF32(*b, 0, 2, back).ok());
  EXPECT_EQ(back[1], -7.0f);
  const absl::Status bf16 = f->ReadF32(*f->Find("h"), 0, 2, back);
  EXPECT_NE(bf16.message().find("BF16; only F32"), std::string::npos) << bf16;
}

TEST(Safetensors, MalformedFilesAreNamed) {
  ScratchDir dir;
  const std::string path = dir.Sub("bad.safetensors");
  const std::string ok_entry = "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"abc", "not a safetensors file"},
      {LengthPrefixed("{" + ok_entry + "}") + "1234", "truncated"},
      {LengthPrefixed("{" + ok_entry) + std::string(8, '\0'), "bad JSON header"},
      {LengthPrefixed("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}") +
           std::string(8, '\0'),
       "do not hold 3 F32 values"},
      {LengthPrefixed("{" + ok_entry +
                      ",\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}") +
           std::string(8, '\0'),
       "overlap"},
      {LengthPrefixed("{\"t\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}") +
           std::string(8, '\0'),
       "unknown dtype Q4"},
  };
  for (const auto& [bytes, what] : cases) {
    WriteBytes(path, bytes);
    auto f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok()) << what;
    EXPECT_NE(f.status().message().find(path), std::string::npos) << f.status();
    EXPECT_NE(f.status().message().find(what), std::string::npos) << f.status();
  }
}

TEST(Safetensors, WriterRefusesIncompleteData) {
  ScratchDir dir;
  auto w = SafetensorsWriter::Create(dir.Sub("w.safetensors"), {{"x", {4}}}, {});
  ASSERT_TRUE(w.ok());
  const float x[2] = {1, 2};
  ASSERT_TRUE((*w)->Append(x, 2).ok());
  EXPECT_FALSE((*w)->Close().ok());
  w->reset();
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("w.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(dir.Sub("w.safetensors.tmp")));
}

class ExportImport : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = CheckpointJob(8, 8, 4);
    trainer_ = MakeTrainer(spec_);
    trainer_->Step();
    trainer_->Step();
    auto saved = SaveCheckpoint(*trainer_, dir_.Sub("ckpt"), 1);
    ASSERT_TRUE(saved.ok()) << saved.status();
    auto exported = ExportSafetensors(saved->path, file());
    ASSERT_TRUE(exported.ok()) << exported.status();
    EXPECT_EQ(exported->step, 2);
    EXPECT_EQ(exported->tensors, static_cast<int64_t>(trainer_->layout().params().size()));
  }
  std::string file() const { return dir_.Sub("w.safetensors"); }

  ScratchDir dir_;
  JobSpec spec_;
  std::unique_ptr<Trainer> trainer_;
};

TEST_F(ExportImport, ImportGivesIdenticalParameters) {
  const ParamLayout& layout = trainer_->layout();
  Tensor params({layout.total_size()});
  ASSERT_TRUE(LoadParamsFromSafetensors(file(), layout, params.data()).ok());
  for (const ParamInfo& p : layout.params()) {
    EXPECT_TRUE(
        testing::SameBits(params.data() + p.offset, trainer_->params().data() + p.offset, p.size))
        << p.name;
  }
}

TEST_F(ExportImport, NamesShapesAndMetadata) {
  auto f = SafetensorsFile::Open(file());
  ASSERT_TRUE(f.ok());
  const SafetensorsEntry* experts = f->Find("layers.1.moe.experts.wi_0");
  ASSERT_NE(experts, nullptr);
  // OpenMoE FFN: wi_0 maps d -> 2 * d_ff, per expert: (E, d, 2 * d_ff).
  EXPECT_EQ(experts->shape, (std::vector<int64_t>{8, 16, 64}));
  EXPECT_EQ(f->Find("embedding")->shape, (std::vector<int64_t>{64, 16}));
  EXPECT_EQ(f->Find("logits")->shape, (std::vector<int64_t>{16, 64}));
  EXPECT_EQ(f->Find("layers.1.moe.router")->shape, (std::vector<int64_t>{16, 8}));
  EXPECT_EQ(f->metadata().at("openmoe.step"), "2");
  auto job = JobFromSafetensors(*f);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->SerializeAsString(), spec_.SerializeAsString());
}

// Each rank of an expert-parallel mesh reads its experts at their global ids.
TEST_F(ExportImport, ShardedLayoutsReadTheirExperts) {
  const ModelDims dims = DimsFromSpec(spec_);
  const ParamLayout full(dims);
  Tensor all({full.total_size()});
  ASSERT_TRUE(LoadParamsFromSafetensors(file(), full, all.data()).ok());
  for (int64_t first : {0, 2, 4, 6}) {
    const ParamLayout shard(dims, {first, 2});
    Tensor part({shard.total_size()});
    ASSERT_TRUE(LoadParamsFromSafetensors(file(), shard, part.data()).ok());
    for (const ParamInfo& p : shard.params()) {
      const ParamInfo& q = full.Get(p.name);
      const int64_t skip = p.is_expert ? first * (p.size / p.shape[0]) : 0;
      EXPECT_TRUE(testing::SameBits(part.data() + p.offset, all.data() + q.offset + skip, p.size))
          << p.name;
    }
  }
}

TEST_F(ExportImport, ImportOfAnotherModelIsNamed) {
  JobSpec other = spec_;
  other.mutable_model()->set_d_ff(64);
  const ParamLayout layout(DimsFromSpec(other));
  Tensor params({layout.total_size()});
  const absl::Status s = LoadParamsFromSafetensors(file(), layout, params.data());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("layers.0.mlp.wi_0 has shape [16, 64], the model needs [16, 128]"),
            std::string::npos)
      << s;

  JobSpec deeper = spec_;
  deeper.mutable_model()->set_num_layers(3);
  const ParamLayout deeper_layout(DimsFromSpec(deeper));
  Tensor p3({deeper_layout.total_size()});
  EXPECT_NE(LoadParamsFromSafetensors(file(), deeper_layout, p3.data())
                .message()
                .find("no tensor layers.2"),
            std::string::npos);

  JobSpec shallower = spec_;
  shallower.mutable_model()->set_num_layers(1);
  shallower.mutable_model()->set_num_experts(0);
  const ParamLayout shallow_layout(DimsFromSpec(shallower));
  Tensor p1({shallow_layout.total_size()});
  EXPECT_NE(LoadParamsFromSafetensors(file(), shallow_layout, p1.data())
                .message()
                .find("is not a parameter of this model"),
            std::string::npos);
}

// checkpoint.init_from_safetensors: a fresh run starts from the file's parameters, at step 0 with
// zero optimizer state, on any mesh.
TEST_F(ExportImport, InitFromSafetensorsStartsAFreshRunFromTheWeights) {
  JobSpec spec = CheckpointJob(8, 16, 8);
  spec.mutable_checkpoint()->set_init_from_safetensors(file());
  auto trainer = MakeTrainer(spec);
  auto session = CheckpointSession::Start(*trainer);
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_FALSE((*session)->restored().restored);
  EXPECT_EQ(trainer->step(), 0);
  for (const ParamInfo& p : trainer->layout().params()) {
    const ParamInfo& q = trainer_->layout().Get(p.name);
    const int64_t skip = p.is_expert ? p.first_expert * (p.size / p.shape[0]) : 0;
    EXPECT_TRUE(testing::SameBits(trainer->params().data() + p.offset,
                                  trainer_->params().data() + q.offset + skip, p.size))
        << p.name;
  }
  for (int64_t i = 0; i < trainer->optimizer().state().size(); ++i)
    ASSERT_EQ(trainer->optimizer().state()[i], 0.0f);

  spec.mutable_checkpoint()->set_init_from_safetensors(dir_.Sub("absent.safetensors"));
  auto missing = MakeTrainer(spec);
  auto failed = CheckpointSession::Start(*missing);
  EXPECT_NE(failed.status().message().find("absent.safetensors"), std::string::npos)
      << failed.status();
}

}  // namespace
}  // namespace openmoe
