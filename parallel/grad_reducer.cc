#include "parallel/grad_reducer.h"

#include <algorithm>
#include <cmath>

#include "core/bf16.h"
#include "core/check.h"

namespace openmoe {

GradReducerOptions GradReducerOptionsFor(bool overlap, double bucket_mb, GradWire wire) {
  GradReducerOptions o;
  o.overlap = overlap;
  o.wire = wire;
  const double floats = bucket_mb * (1 << 20) / sizeof(float);
  o.bucket_floats = static_cast<int64_t>(std::clamp(floats, 1.0, 4.0e15));
  o.first_bucket_floats = std::min<int64_t>(o.bucket_floats, int64_t{1} << 18);
  return o;
}

// The reduction of one bucket over its region's communicator: a reduce-scatter (an all-to-all-v
// of blocks: block q of the bucket to rank q), each rank's sum of its block, and an all-gather of
// the sums. Both stages send every message at once (not MPI_Iallreduce, whose pipelined rounds
// each wait for the next progress call: measured, it hid nothing behind the backward).
class GradReducer::BucketTask final : public AsyncTask {
 public:
  BucketTask(float* data, int64_t n, Communicator* comm, GradWire wire)
      : data_(data), n_(n), comm_(comm), wire_(wire) {
    const int64_t ranks = comm_->size(), block = (n_ + ranks - 1) / ranks;
    for (int64_t q = 0; q < ranks; ++q)
      counts_.push_back(std::max<int64_t>(0, std::min(n_, (q + 1) * block) - q * block));
    first_ = std::min(n_, comm_->rank() * block);
    mine_ = counts_[comm_->rank()];
  }

  const Communicator* comm() const override { return comm_; }
  int stages() const override { return 2; }

  std::unique_ptr<PendingCollective> Begin() override {
    stage_ = 0;
    const std::vector<int64_t> from_each(counts_.size(), mine_);
    if (wire_ == GradWire::kFp32) {
      recv32_.resize(counts_.size() * mine_);
      return comm_->StartAllToAllV(data_, counts_, recv32_.data(), from_each);
    }
    wire16_.resize(n_);
    recv16_.resize(counts_.size() * mine_);
    FloatToBf16(data_, wire16_.data(), n_);
    return comm_->StartAllToAllV(wire16_.data(), counts_, recv16_.data(), from_each);
  }

  std::unique_ptr<PendingCollective> Next() override {
    const bool fp32 = wire_ == GradWire::kFp32;
    if (stage_++ == 0) {
      // This rank's block: the sum in fp32, rank order, its own values as they are (so on 2 ranks
      // each sum is the one addition a blocking all-reduce makes).
      const int64_t ranks = static_cast<int64_t>(counts_.size()), me = comm_->rank();
      for (int64_t i = 0; i < mine_; ++i) {
        auto term = [&](int64_t q) {
          if (q == me) return data_[first_ + i];
          return fp32 ? recv32_[q * mine_ + i] : Bf16ToFloat(recv16_[q * mine_ + i]);
        };
        float sum = term(0);
        for (int64_t q = 1; q < ranks; ++q) sum += term(q);
        if (fp32) {
          data_[first_ + i] = sum;
        } else {
          wire16_[first_ + i] = FloatToBf16(sum);
        }
      }
      return fp32 ? comm_->StartAllGatherV(data_ + first_, data_, counts_)
                  : comm_->StartAllGatherV(wire16_.data() + first_, wire16_.data(), counts_);
    }
    if (!fp32) Bf16ToFloat(wire16_.data(), data_, n_);
    return nullptr;
  }

  int64_t held_bytes() const {
    return static_cast<int64_t>(recv32_.capacity() * sizeof(float) +
                                (wire16_.capacity() + recv16_.capacity()) * sizeof(uint16_t));
  }

 private:
  float* data_;
  int64_t n_;
  Communicator* comm_;
  GradWire wire_;
  std::vector<int64_t> counts_;  // (ranks) block q's size; block q is summed by rank q
  int64_t first_ = 0, mine_ = 0;  // this rank's block
  int stage_ = 0;
  std::vector<float> recv32_;                // FP32: the others' pieces of this rank's block
  std::vector<uint16_t> wire16_, recv16_;    // BF16: the bucket as bf16, and the pieces
};

GradReducer::GradReducer(float* grads, std::vector<GradRegion> regions,
                         const GradReducerOptions& options, CommThread* thread)
    : grads_(grads), regions_(std::move(regions)), options_(options), thread_(thread) {
  OPENMOE_CHECK(options_.bucket_floats >= 1 && options_.first_bucket_floats >= 1);
  for (int r = 0; r < static_cast<int>(regions_.size()); ++r) {
    const GradRegion& region = regions_[r];
    OPENMOE_CHECK(region.begin <= region.end && region.comm != nullptr);
    if (region.comm->size() == 1 || region.begin == region.end) continue;  // nothing to sum
    if (!options_.overlap) {
      buckets_.push_back({region.begin, region.end, r});
      continue;
    }
    int64_t end = region.end;
    int64_t size = options_.first_bucket_floats;
    while (end > region.begin) {
      const int64_t begin = std::max(region.begin, end - size);
      buckets_.push_back({begin, end, r});
      end = begin;
      size = options_.bucket_floats;
    }
  }
  for (const Bucket& b : buckets_) {
    tasks_.push_back(std::make_unique<BucketTask>(grads_ + b.begin, b.end - b.begin,
                                                  regions_[b.region].comm, options_.wire));
  }
  final_count_.assign(buckets_.size(), 0);
  started_.assign(buckets_.size(), false);
}

GradReducer::~GradReducer() {
  for (auto& t : tasks_) thread_->Wait(t.get());
}

void GradReducer::BeginStep() {
  for (auto& t : tasks_) thread_->Wait(t.get());
  std::fill(final_count_.begin(), final_count_.end(), 0);
  std::fill(started_.begin(), started_.end(), false);
  started_early_.clear();
  in_step_ = true;
}

void GradReducer::Start(int bucket) {
  started_[bucket] = true;
  thread_->Submit(tasks_[bucket].get());
}

void GradReducer::GradientsFinal(int64_t offset, int64_t size) {
  if (!in_step_ || !options_.overlap) return;
  const int64_t end = offset + size;
  for (int i = 0; i < static_cast<int>(buckets_.size()); ++i) {
    const Bucket& b = buckets_[i];
    const int64_t overlap = std::min(end, b.end) - std::max(offset, b.begin);
    if (overlap <= 0) continue;
    final_count_[i] += overlap;
    OPENMOE_CHECK_MSG(final_count_[i] <= b.end - b.begin,
                      "gradients [%lld, %lld) marked final twice in one step",
                      static_cast<long long>(offset), static_cast<long long>(end));
    if (final_count_[i] == b.end - b.begin && !started_[i]) {
      Start(i);
      started_early_.push_back(i);
    }
  }
  thread_->Poll();
}

void GradReducer::FinishStep() {
  if (!options_.overlap && options_.wire == GradWire::kFp32) {
    // The blocking path: one all-reduce per region.
    for (const Bucket& b : buckets_)
      regions_[b.region].comm->AllReduceSum(grads_ + b.begin, b.end - b.begin);
    in_step_ = false;
    return;
  }
  for (int i = 0; i < static_cast<int>(buckets_.size()); ++i)
    if (!started_[i]) Start(i);
  for (auto& t : tasks_) thread_->Wait(t.get());
  in_step_ = false;
}

int64_t GradReducer::held_bytes() const {
  int64_t bytes = 0;
  for (const auto& t : tasks_) bytes += t->held_bytes();
  return bytes;
}

}  // namespace openmoe
