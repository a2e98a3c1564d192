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

// The reduction of one bucket over its region's communicator, as a chain of collectives.
class GradReducer::BucketTask final : public AsyncTask {
 public:
  BucketTask(float* data, int64_t n, Communicator* comm, GradWire wire)
      : data_(data), n_(n), comm_(comm), wire_(wire) {}

  const Communicator* comm() const override { return comm_; }
  int stages() const override { return wire_ == GradWire::kFp32 ? 1 : 2; }

  std::unique_ptr<PendingCollective> Begin() override {
    stage_ = 0;
    if (wire_ == GradWire::kFp32) return comm_->StartAllReduceSum(data_, n_);
    // Reduce-scatter: block q of every rank's bf16 copy goes to rank q.
    const int64_t ranks = comm_->size(), block = Block();
    a_.resize(ranks * block);
    b_.resize(ranks * block);
    FloatToBf16(data_, a_.data(), n_);
    std::fill(a_.begin() + n_, a_.end(), uint16_t{0});
    return comm_->StartAllToAll(a_.data(), b_.data(), block);
  }

  std::unique_ptr<PendingCollective> Next() override {
    if (wire_ == GradWire::kFp32) return nullptr;
    const int64_t ranks = comm_->size(), block = Block(), me = comm_->rank();
    if (stage_++ == 0) {
      // This rank's block: the sum in fp32, rank order, this rank's own values unrounded.
      const int64_t first = me * block;
      for (int64_t i = 0; i < block; ++i) {
        float sum = 0;
        for (int64_t q = 0; q < ranks; ++q) {
          sum += q == me ? (first + i < n_ ? data_[first + i] : 0.0f)
                         : Bf16ToFloat(b_[q * block + i]);
        }
        a_[i] = FloatToBf16(sum);
      }
      return comm_->StartAllGather(a_.data(), b_.data(), block);
    }
    Bf16ToFloat(b_.data(), data_, n_);
    return nullptr;
  }

  int64_t held_bytes() const {
    return static_cast<int64_t>((a_.capacity() + b_.capacity()) * sizeof(uint16_t));
  }

 private:
  int64_t Block() const { return (n_ + comm_->size() - 1) / comm_->size(); }

  float* data_;
  int64_t n_;
  Communicator* comm_;
  GradWire wire_;
  int stage_ = 0;
  std::vector<uint16_t> a_, b_;  // BF16: the wire's send and receive buffers
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
