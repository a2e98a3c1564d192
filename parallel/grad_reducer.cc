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

// The sum of n floats over a region's communicator, in two collectives: a reduce-scatter (an
// all-to-all-v of blocks: block q to rank q), each rank's sum of its block, and an all-gather of
// the sums. Both stages send every message at once (not MPI_Iallreduce, whose pipelined rounds
// each wait for the next progress call: measured, it hid nothing behind the backward).
class GradReducer::BlockSum {
 public:
  BlockSum(Communicator* comm, GradWire wire) : comm_(comm), wire_(wire) {}

  // Starts the reduce-scatter of data (n), which stays the sum's until Finish.
  std::unique_ptr<PendingCollective> Start(float* data, int64_t n) {
    data_ = data;
    n_ = n;
    const int64_t ranks = comm_->size(), block = (n_ + ranks - 1) / ranks;
    counts_.clear();
    for (int64_t q = 0; q < ranks; ++q)
      counts_.push_back(std::max<int64_t>(0, std::min(n_, (q + 1) * block) - q * block));
    first_ = std::min(n_, comm_->rank() * block);
    mine_ = counts_[comm_->rank()];
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

  // The reduce-scatter completed: sums this rank's block and starts the all-gather.
  std::unique_ptr<PendingCollective> SumAndGather() {
    const bool fp32 = wire_ == GradWire::kFp32;
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

  // The all-gather completed: data holds the sums.
  void Finish() {
    if (wire_ == GradWire::kBf16) Bf16ToFloat(wire16_.data(), data_, n_);
  }

  int64_t held_bytes() const {
    return static_cast<int64_t>(recv32_.capacity() * sizeof(float) +
                                (wire16_.capacity() + recv16_.capacity()) * sizeof(uint16_t));
  }

 private:
  Communicator* comm_;
  GradWire wire_;
  float* data_ = nullptr;
  int64_t n_ = 0;
  std::vector<int64_t> counts_;   // (ranks) block q's size; block q is summed by rank q
  int64_t first_ = 0, mine_ = 0;  // this rank's block
  std::vector<float> recv32_;              // FP32: the others' pieces of this rank's block
  std::vector<uint16_t> wire16_, recv16_;  // BF16: the data as bf16, and the pieces
};

// One bucket's reduction, as the CommThread runs it.
class GradReducer::BucketTask : public AsyncTask {
 public:
  BucketTask(Communicator* comm, GradWire wire) : comm_(comm), sum_(comm, wire) {}
  const Communicator* comm() const override { return comm_; }
  bool background() const override { return true; }  // gives way to the expert exchange
  int64_t held_bytes() const { return sum_.held_bytes() + extra_bytes(); }

 protected:
  virtual int64_t extra_bytes() const { return 0; }
  Communicator* comm_;
  BlockSum sum_;
  int stage_ = 0;
};

// A dense bucket: its elements summed in place.
class GradReducer::DenseBucketTask final : public BucketTask {
 public:
  DenseBucketTask(float* data, int64_t n, Communicator* comm, GradWire wire)
      : BucketTask(comm, wire), data_(data), n_(n) {}
  int stages() const override { return 2; }

  std::unique_ptr<PendingCollective> Begin() override {
    stage_ = 0;
    return sum_.Start(data_, n_);
  }
  std::unique_ptr<PendingCollective> Next() override {
    if (stage_++ == 0) return sum_.SumAndGather();
    sum_.Finish();
    return nullptr;
  }

 private:
  float* data_;
  int64_t n_;
};

// A sparse range's bucket: the bitmaps of the rows each rank wrote are all-gathered, the union's
// rows packed, summed, and put back (the other rows are zero on every rank and stay so).
class GradReducer::SparseBucketTask final : public BucketTask {
 public:
  SparseBucketTask(float* data, const SparseRows& range, Communicator* comm, GradWire wire)
      : BucketTask(comm, wire),
        data_(data),
        range_(range),
        mine_((range.rows + 15) / 16),
        all_(mine_.size() * comm->size()) {}
  int stages() const override { return 3; }
  // The last step's union, in floats.
  int64_t floats_sent() const { return static_cast<int64_t>(union_.size()) * range_.row_floats; }

  // This rank's rows this step (compute thread, while the task is not running).
  void SetRows(const std::vector<int64_t>& rows) {
    std::fill(mine_.begin(), mine_.end(), uint16_t{0});
    for (int64_t r : rows) {
      OPENMOE_CHECK_MSG(r >= 0 && r < range_.rows, "sparse row %lld outside [0, %lld)",
                        static_cast<long long>(r), static_cast<long long>(range_.rows));
      mine_[r / 16] |= static_cast<uint16_t>(1u << (r % 16));
    }
  }
  void SetAllRows() {
    std::fill(mine_.begin(), mine_.end(), uint16_t{0xFFFF});
    if (range_.rows % 16 != 0) mine_.back() = static_cast<uint16_t>((1u << (range_.rows % 16)) - 1);
  }

  std::unique_ptr<PendingCollective> Begin() override {
    stage_ = 0;
    const std::vector<int64_t> counts(comm_->size(), static_cast<int64_t>(mine_.size()));
    return comm_->StartAllGatherV(mine_.data(), all_.data(), counts);
  }

  std::unique_ptr<PendingCollective> Next() override {
    const int64_t w = range_.row_floats;
    switch (stage_++) {
      case 0: {  // the union of the bitmaps: pack its rows
        union_.clear();
        const int64_t words = static_cast<int64_t>(mine_.size());
        for (int64_t word = 0; word < words; ++word) {
          uint16_t bits = 0;
          for (int q = 0; q < comm_->size(); ++q) bits |= all_[q * words + word];
          for (int b = 0; b < 16; ++b)
            if ((bits >> b) & 1u) union_.push_back(word * 16 + b);
        }
        in_place_ = static_cast<int64_t>(union_.size()) == range_.rows;
        if (in_place_) {  // every row: no packing
          packed_.clear();
          return sum_.Start(data_, range_.rows * w);
        }
        packed_.resize(union_.size() * w);
        for (size_t i = 0; i < union_.size(); ++i)
          std::copy_n(data_ + union_[i] * w, w, packed_.data() + i * w);
        return sum_.Start(packed_.data(), static_cast<int64_t>(packed_.size()));
      }
      case 1:
        return sum_.SumAndGather();
      default:
        sum_.Finish();
        if (in_place_) return nullptr;
        for (size_t i = 0; i < union_.size(); ++i)
          std::copy_n(packed_.data() + i * w, w, data_ + union_[i] * w);
        return nullptr;
    }
  }

 private:
  int64_t extra_bytes() const override {
    return static_cast<int64_t>((mine_.capacity() + all_.capacity()) * sizeof(uint16_t) +
                                union_.capacity() * sizeof(int64_t) +
                                packed_.capacity() * sizeof(float));
  }

  float* data_;  // row 0 of the range
  SparseRows range_;
  std::vector<uint16_t> mine_, all_;  // bitmaps: this rank's rows, every rank's
  std::vector<int64_t> union_;        // the rows some rank wrote
  std::vector<float> packed_;         // their values, back to back
  bool in_place_ = false;             // the union is every row: summed where they are
};

GradReducer::GradReducer(float* grads, std::vector<GradRegion> regions,
                         const GradReducerOptions& options, CommThread* thread,
                         const std::vector<SparseRows>& sparse)
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
    // The region's sparse ranges, from the top down.
    std::vector<SparseRows> inside;
    for (const SparseRows& s : sparse) {
      if (s.begin >= region.end || s.end() <= region.begin) continue;
      OPENMOE_CHECK_MSG(s.begin >= region.begin && s.end() <= region.end && s.row_floats >= 1,
                        "sparse rows [%lld, %lld) straddle a region's edge",
                        static_cast<long long>(s.begin), static_cast<long long>(s.end()));
      inside.push_back(s);
    }
    std::sort(inside.begin(), inside.end(),
              [](const SparseRows& a, const SparseRows& b) { return a.begin > b.begin; });
    int64_t end = region.end;
    int64_t size = options_.first_bucket_floats;
    auto dense_down_to = [&](int64_t floor) {
      while (end > floor) {
        const int64_t begin = std::max(floor, end - size);
        buckets_.push_back({begin, end, r});
        end = begin;
        size = options_.bucket_floats;
      }
    };
    for (const SparseRows& s : inside) {
      OPENMOE_CHECK_MSG(s.end() <= end, "sparse rows overlap");
      dense_down_to(s.end());
      if (s.end() > s.begin) {
        buckets_.push_back({s.begin, s.end(), r, /*sparse=*/true});
        sparse_.push_back({s, static_cast<int>(buckets_.size()) - 1});
      }
      end = s.begin;
      size = options_.bucket_floats;
    }
    dense_down_to(region.begin);
  }
  for (int i = 0; i < static_cast<int>(buckets_.size()); ++i) {
    const Bucket& b = buckets_[i];
    Communicator* comm = regions_[b.region].comm;
    if (!b.sparse) {
      tasks_.push_back(
          std::make_unique<DenseBucketTask>(grads_ + b.begin, b.end - b.begin, comm, options_.wire));
      continue;
    }
    for (SparseBucket& s : sparse_) {
      if (s.bucket != i) continue;
      auto task = std::make_unique<SparseBucketTask>(grads_ + b.begin, s.range, comm, options_.wire);
      s.task = task.get();
      tasks_.push_back(std::move(task));
    }
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
  for (SparseBucket& s : sparse_) s.task->SetAllRows();  // unless the step says which
  in_step_ = true;
}

void GradReducer::SetRowsWritten(int64_t begin, const std::vector<int64_t>& rows) {
  for (SparseBucket& s : sparse_) {
    if (s.range.begin != begin) continue;
    OPENMOE_CHECK_MSG(in_step_ && !started_[s.bucket], "rows written said after the bucket started");
    s.task->SetRows(rows);
  }
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

int64_t GradReducer::sparse_floats_sent() const {
  int64_t floats = 0;
  for (const SparseBucket& s : sparse_) floats += s.task->floats_sent();
  return floats;
}

int64_t GradReducer::held_bytes() const {
  int64_t bytes = 0;
  for (const auto& t : tasks_) bytes += t->held_bytes();
  return bytes;
}

}  // namespace openmoe
