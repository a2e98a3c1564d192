// The small MoE job the cost-model tests count by hand, the slice it is predicted on, and the
// collective of a kind in a counted step.
//
// SmallMoeCostJob: 2 layers (layer 1 MoE: 4 experts top-2, extra dense FFN), d 64, 4 x 16 heads,
// d_ff 128 (OpenMoE form: wi_0 holds 2 d_ff), vocab 256, on a 4x4 torus of 16 chips with expert
// groups of 4 (half a row), 32 rows of 64 tokens in 2 microbatches, bf16 activations and
// all-to-all payload as on a TPU (ActivationBytes: 2). `sets` (ApplySet's NAME=VALUE) go on top,
// before validation.
#pragma once

#include <initializer_list>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "launch/job_loader.h"
#include "parallel/cost/step_workload.h"
#include "parallel/mesh.h"

namespace openmoe::testing {

inline JobSpec SmallMoeCostJob(std::initializer_list<const char*> sets = {}) {
  JobSpec spec;
  for (const char* s :
       {"model.vocab_size=256", "model.num_layers=2", "model.d_model=64", "model.num_heads=4",
        "model.head_dim=16", "model.d_ff=128", "model.num_experts=4", "model.moe_interval=2",
        "router.group_size=64", "topology.num_chips=16", "topology.torus_x=4", "topology.torus_y=4",
        "mesh.expert_parallel=4", "train.batch_rows=32", "train.seq_len=64", "train.microbatches=2",
        "train.compute_dtype=BF16"}) {
    EXPECT_TRUE(ApplySet(s, &spec).ok()) << s;
  }
  for (const char* s : sets) EXPECT_TRUE(ApplySet(s, &spec).ok()) << s;
  EXPECT_TRUE(ValidateJob(spec).ok()) << ValidateJob(spec);
  return spec;
}

// The whole slice of `spec` as one process (what `openmoe plan` predicts on).
inline Mesh SliceOf(const JobSpec& spec) {
  const absl::StatusOr<Mesh> mesh = MakeMesh(spec, /*world_size=*/1, /*rank=*/0);
  EXPECT_TRUE(mesh.ok()) << mesh.status();
  return mesh.ok() ? *mesh : Mesh{};
}

// The step's collective of `kind` (a test failure, and the first collective, if there is none).
inline const CollectiveWork& FindCollective(const StepWorkload& w, CollectiveKind kind) {
  for (const CollectiveWork& c : w.collectives) {
    if (c.kind == kind) return c;
  }
  ADD_FAILURE() << CollectiveKindName(kind) << " missing";
  return w.collectives.front();
}

}  // namespace openmoe::testing
