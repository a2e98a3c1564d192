// GradReducer: sums this rank's gradients over the ranks that hold the same parameters, in
// buckets sent while the backward goes on (as PyTorch DDP and Megatron-Core do).
//
// The flat gradient buffer is cut into regions, each summed over one communicator (the trainer:
// shared parameters over the ranks holding the same model piece, experts over their replicas;
// a region over one rank is left alone). Each region is cut into buckets from its end down, the
// order in which the backward finishes gradients (it walks the layout's parameters in reverse):
// the first bucket `first_bucket_floats` (so that the link starts early, as DDP's first bucket),
// the others `bucket_floats`, the lowest taking what is left. A bucket edge may fall inside a
// tensor. Once GradientsFinal has covered every element of a bucket, its reduction starts on the
// CommThread, while the backward goes on; FinishStep waits for the last one.
//
// A bucket's reduction is a reduce-scatter (an all-to-all-v: block q of the bucket to rank q),
// each rank's sum of its block in fp32 in rank order (its own values as they are), and an
// all-gather of the sums; both stages send all their messages at once. Wire kFp32: the same sums
// as a blocking all-reduce on 2 ranks, bit for bit (each is one commutative addition); on more
// ranks fp32 summation order. kBf16: half the bytes: the others' pieces arrive as bf16 and the
// sums are rounded to bf16 once before the all-gather, so every rank ends with the same
// bf16-rounded sums.
//
// Sparse rows (an embedding's gradient, final only when the backward ends): a range of rows of
// which a step writes only some on each rank (the rows its tokens looked up; the others stay
// zero) is a bucket of its own that sends only the rows some rank of its region wrote. Each rank
// says which rows it wrote (SetRowsWritten); the bucket's first stage all-gathers those bitmaps,
// and the union's rows are summed as any bucket's elements (with kFp32 the same sums, bit for
// bit: a row no rank wrote is zero everywhere, as its sum would be; with kBf16 which rank keeps
// its own value unrounded follows the packing). A step without SetRowsWritten, or whose union is
// every row, sums the range in place.
//
// Without overlap, FinishStep reduces each region as one bucket, blocking: with kFp32 that is one
// all-reduce per region, the path before buckets existed (sparse rows included).
//
// Ownership and threads: the buffer, the communicators and the CommThread must outlive the
// reducer. BeginStep, GradientsFinal and FinishStep are called by the compute thread; the
// collectives run on the CommThread over the regions' communicators, which nothing else may use
// meanwhile (Communicator::Duplicate). Collective: every rank of a region's communicator marks
// the same ranges in the same order (the same backward), so buckets start in the same order.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/communicator.h"
#include "core/gradient_listener.h"
#include "parallel/comm_thread.h"

namespace openmoe {

enum class GradWire { kFp32, kBf16 };

struct GradRegion {
  int64_t begin = 0, end = 0;      // [begin, end) of the gradient buffer
  Communicator* comm = nullptr;    // summed over these ranks
};

struct GradReducerOptions {
  bool overlap = true;
  int64_t bucket_floats = int64_t{4} << 18;       // 4 MiB of fp32
  int64_t first_bucket_floats = int64_t{1} << 18;  // 1 MiB
  GradWire wire = GradWire::kFp32;
};

// Bucket sizes in floats from train.grad_bucket_mb: the first bucket is 1 MiB or the bucket size
// if smaller; at least one float each.
GradReducerOptions GradReducerOptionsFor(bool overlap, double bucket_mb, GradWire wire);

class GradReducer final : public GradientListener {
 public:
  // sparse: ranges of rows (core/gradient_listener.h) each inside one region.
  GradReducer(float* grads, std::vector<GradRegion> regions, const GradReducerOptions& options,
              CommThread* thread, const std::vector<SparseRows>& sparse = {});
  ~GradReducer() override;

  // A new step: no gradient is final yet. Waits for any reduction still in flight.
  void BeginStep();
  // This step writes only `rows` (any order, repeats allowed) of the sparse range at `begin`
  // on this rank; its other rows stay zero. Once per step at most, between BeginStep and the
  // range's GradientsFinal.
  void SetRowsWritten(int64_t begin, const std::vector<int64_t>& rows);
  // grads[offset, offset + size) is final: starts every bucket that became complete (overlap).
  void GradientsFinal(int64_t offset, int64_t size) override;
  // Starts the buckets not started yet (a range never marked final counts as final now), and
  // waits until every bucket is reduced: then the buffer holds the sums.
  void FinishStep();

  struct Bucket {
    int64_t begin = 0, end = 0;  // [begin, end) of the buffer
    int region = 0;
    bool sparse = false;  // a sparse range's bucket
  };
  // Every bucket, region by region, each region's from its end down.
  const std::vector<Bucket>& buckets() const { return buckets_; }
  // The buckets the last step started before FinishStep, in the order it started them.
  const std::vector<int>& started_early() const { return started_early_; }
  // Bytes held for the buckets' receive (and BF16 wire) buffers.
  int64_t held_bytes() const;
  // Floats the last step's sparse buckets summed (the union's rows).
  int64_t sparse_floats_sent() const;

 private:
  class BlockSum;
  class BucketTask;
  class DenseBucketTask;
  class SparseBucketTask;
  void Start(int bucket);

  float* grads_;
  std::vector<GradRegion> regions_;
  GradReducerOptions options_;
  CommThread* thread_;
  std::vector<Bucket> buckets_;
  std::vector<std::unique_ptr<BucketTask>> tasks_;  // one per bucket
  struct SparseBucket {
    SparseRows range;
    int bucket = 0;
    SparseBucketTask* task = nullptr;  // owned by tasks_
  };
  std::vector<SparseBucket> sparse_;
  std::vector<int64_t> final_count_;                // elements marked final this step, per bucket
  std::vector<bool> started_;                       // per bucket, this step
  std::vector<int> started_early_;
  bool in_step_ = false;
};

}  // namespace openmoe
