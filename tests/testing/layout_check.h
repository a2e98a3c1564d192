// Layout invariance: a job on some mesh (chips, expert parallelism, ranks) against the same job
// on one chip in one process. Used by the single-process and the mpirun suites.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "model/sharding.h"

#include "gtest/gtest.h"
#include "launch/trainer.h"
#include "parallel/communicator.h"

namespace openmoe::testing {

// A tiny MoE job whose global batch (128 rows x 8 tokens, groups of 16) fits 1 to 64 chips.
inline JobSpec LayoutJob(int64_t experts) {
  JobSpec spec;
  ModelConfig* m = spec.mutable_model();
  m->set_vocab_size(64);
  m->set_vocab_pad_multiple(64);
  m->set_num_layers(2);
  m->set_d_model(16);
  m->set_num_heads(4);
  m->set_head_dim(4);
  m->set_d_ff(32);
  m->set_num_experts(experts);
  m->set_moe_interval(2);
  spec.mutable_router()->set_group_size(16);
  // Small capacity so that drops happen and must match too.
  spec.mutable_router()->set_capacity_factor(1.0);
  spec.mutable_router()->set_min_capacity(2);
  spec.mutable_train()->set_batch_rows(128);
  spec.mutable_train()->set_seq_len(8);
  spec.mutable_train()->set_seed(11);
  spec.mutable_schedule()->set_warmup_steps(10);
  spec.mutable_schedule()->set_peak_learning_rate(0.05);
  return spec;
}

inline JobSpec OnMesh(JobSpec spec, int64_t chips, int64_t torus_x, int64_t expert_parallel,
                      int64_t microbatches = 1) {
  spec.mutable_topology()->set_num_chips(chips);
  spec.mutable_topology()->set_torus_x(torus_x);
  spec.mutable_topology()->set_torus_y(chips / torus_x);
  spec.mutable_mesh()->set_expert_parallel(expert_parallel);
  spec.mutable_train()->set_microbatches(microbatches);
  return spec;
}

// The same job with `shared` shared experts of hidden expert_d_ff (0: d_ff) in every MoE layer.
inline JobSpec WithSharedExperts(JobSpec spec, int64_t shared, int64_t expert_d_ff = 0) {
  spec.mutable_model()->set_num_shared_experts(shared);
  spec.mutable_model()->set_expert_d_ff(expert_d_ff);
  return spec;
}

// The same job with a model axis of size mp (tensor parallelism).
inline JobSpec WithModelParallel(JobSpec spec, int64_t mp) {
  spec.mutable_mesh()->set_model_parallel(mp);
  return spec;
}

// Every valid data x expert x model layout of 2, 4, 8 and 16 chips (mp and ep in {1, 2, 4}) on
// `ranks` ranks, of `job` (LayoutJob(8) by default), with microbatches 1 and 2 on alternate
// layouts.
struct MeshLayout {
  JobSpec spec;
  bool model_group_spans_ranks = false;  // mp > chips per rank
};
inline std::vector<MeshLayout> EveryDataExpertModelLayout(int ranks,
                                                          const JobSpec& job = LayoutJob(8)) {
  std::vector<MeshLayout> out;
  for (int64_t chips : {2, 4, 8, 16}) {
    if (chips % ranks != 0) continue;
    const int64_t per_rank = chips / ranks;
    for (int64_t mp : {1, 2, 4}) {
      for (int64_t ep : {1, 2, 4}) {
        if (mp * ep > chips) continue;
        if (per_rank % mp != 0 && mp % per_rank != 0) continue;
        const int64_t shards_per_rank = per_rank >= mp ? per_rank / mp : 1;
        if (shards_per_rank % ep != 0 && ep % shards_per_rank != 0) continue;
        const int64_t micro = out.size() % 2 == 0 ? 1 : 2;
        const int64_t torus_x = chips >= 8 ? 4 : chips >= 4 ? 2 : 1;
        out.push_back(
            {WithModelParallel(OnMesh(job, chips, torus_x, ep, micro), mp), mp > per_rank});
      }
    }
  }
  return out;
}

// Runs `steps` steps of `spec` on `comm` and of its one-chip version in this process alone;
// expects the same losses (`tolerance` relative, 1e-5 by default) and, at the first step, the
// same gradients of every shared parameter and of this rank's experts (relative L2).
inline void ExpectSameAsOneChip(const JobSpec& spec, Communicator* comm, int steps = 5,
                                double tolerance = 1e-5) {
  const JobSpec one_chip = WithModelParallel(OnMesh(spec, 1, 1, 1), 1);
  auto reference = Trainer::Create(one_chip).value();
  auto trainer = Trainer::Create(spec, comm).value();
  const std::string where = "chips=" + std::to_string(spec.topology().num_chips()) +
                            " ep=" + std::to_string(spec.mesh().expert_parallel()) +
                            " mp=" + std::to_string(spec.mesh().model_parallel()) +
                            " ranks=" + std::to_string(comm->size()) +
                            " micro=" + std::to_string(spec.train().microbatches());

  // Gradients at the initial parameters.
  reference->ComputeGradients(reference->NextLocalBatch().value());
  trainer->ComputeGradients(trainer->NextLocalBatch().value());
  for (const ParamInfo& p : trainer->layout().params()) {
    const ParamInfo& q = reference->layout().Get(p.name);
    // This rank's piece (its experts, its model slice) is a box of the reference's whole tensor.
    std::vector<float> want_box(static_cast<size_t>(p.size));
    CopyWholeToBox(p.box, reference->grads().data() + q.offset, want_box.data());
    const float* want = want_box.data();
    const float* got = trainer->grads().data() + p.offset;
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < p.size; ++i) {
      diff += (got[i] - want[i]) * static_cast<double>(got[i] - want[i]);
      norm += want[i] * static_cast<double>(want[i]);
    }
    EXPECT_LE(std::sqrt(diff), tolerance * std::sqrt(norm) + 1e-9)
        << where << " gradient of " << p.name;
  }

  // Losses of the first steps.
  for (int s = 0; s < steps; ++s) {
    const double want = reference->Step().loss;
    const double got = trainer->Step().loss;
    EXPECT_NEAR(got, want, tolerance * std::fabs(want)) << where << " step " << s;
  }
}

}  // namespace openmoe::testing
