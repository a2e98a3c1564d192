// Helpers of the checkpoint tests: a fresh temporary directory, trainers of a small MoE job on a
// given mesh, and whole-buffer comparisons.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "launch/trainer.h"
#include "tests/testing/layout_check.h"

namespace openmoe::testing {

// A new empty directory under the test temp dir, removed by the destructor.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = ::testing::TempDir() + "openmoe_ckpt_XXXXXX";
    char* made = mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr);
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// LayoutJob(experts) (128 rows x 8 tokens, groups of 16) on `chips` chips with expert_parallel ep.
inline JobSpec CheckpointJob(int64_t experts, int64_t chips, int64_t ep, int64_t microbatches = 1) {
  int64_t torus_x = 1;
  while (torus_x * torus_x < chips) torus_x *= 2;
  return OnMesh(LayoutJob(experts), chips, torus_x, ep, microbatches);
}

inline std::unique_ptr<Trainer> MakeTrainer(const JobSpec& spec, Communicator* comm = nullptr) {
  auto t = Trainer::Create(spec, comm);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(t).value();
}

inline bool SameBits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, static_cast<size_t>(n) * sizeof(float)) == 0;
}

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace openmoe::testing
