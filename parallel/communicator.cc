#include "parallel/communicator.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "core/check.h"

#define OPENMOE_MPI_CHECK(call)                                                          \
  do {                                                                                   \
    const int mpi_rc_ = (call);                                                          \
    OPENMOE_CHECK_MSG(mpi_rc_ == MPI_SUCCESS, "%s returned MPI error %d", #call, mpi_rc_); \
  } while (0)

namespace openmoe {

void SelfCommunicator::AllToAll(const int64_t* send, int64_t* recv, int64_t per_rank) {
  std::memmove(recv, send, per_rank * sizeof(int64_t));
}

namespace {

// One rank's variable all-to-all is a copy of its one block.
void SelfAllToAllV(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                   const std::vector<int64_t>& recv_counts, size_t value_bytes) {
  OPENMOE_CHECK(send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0]);
  if (send_counts[0] > 0) std::memmove(recv, send, send_counts[0] * value_bytes);
}

}  // namespace

void SelfCommunicator::AllToAllV(const float* send, const std::vector<int64_t>& send_counts,
                                 float* recv, const std::vector<int64_t>& recv_counts) {
  SelfAllToAllV(send, send_counts, recv, recv_counts, sizeof(float));
}

void SelfCommunicator::AllToAllV(const uint16_t* send, const std::vector<int64_t>& send_counts,
                                 uint16_t* recv, const std::vector<int64_t>& recv_counts) {
  SelfAllToAllV(send, send_counts, recv, recv_counts, sizeof(uint16_t));
}

std::unique_ptr<Communicator> SelfCommunicator::Split(int, int) {
  return std::make_unique<SelfCommunicator>();
}

std::unique_ptr<Communicator> SelfCommunicator::Duplicate() {
  return std::make_unique<SelfCommunicator>();
}

namespace {

// MPI_THREAD_MULTIPLE was provided (InitMpi).
bool thread_multiple = false;

// Several point-to-point requests, complete when all are.
class MpiPendingSet final : public PendingCollective {
 public:
  ~MpiPendingSet() override {
    if (!requests.empty())
      OPENMOE_MPI_CHECK(MPI_Waitall(static_cast<int>(requests.size()), requests.data(),
                                    MPI_STATUSES_IGNORE));
  }
  bool Test() override {
    if (requests.empty()) return true;
    int flag = 0;
    OPENMOE_MPI_CHECK(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &flag,
                                  MPI_STATUSES_IGNORE));
    if (flag) requests.clear();
    return flag != 0;
  }
  std::vector<MPI_Request> requests;
};

int ToInt(int64_t n) {
  OPENMOE_CHECK_MSG(n >= 0 && n <= INT_MAX, "collective of %lld values: more than 2^31",
                    static_cast<long long>(n));
  return static_cast<int>(n);
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    OPENMOE_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    OPENMOE_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~MpiCommunicator() override {
    if (owned_) OPENMOE_MPI_CHECK(MPI_Comm_free(&comm_));
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void AllReduceSum(float* data, int64_t n) override { Reduce(data, n, MPI_FLOAT, sizeof(float)); }
  void AllReduceSum(double* data, int64_t n) override { Reduce(data, n, MPI_DOUBLE, sizeof(double)); }
  void AllReduceSum(int64_t* data, int64_t n) override { Reduce(data, n, MPI_INT64_T, sizeof(int64_t)); }
  void AllReduceMin(int64_t* data, int64_t n) override {
    Reduce(data, n, MPI_INT64_T, sizeof(int64_t), MPI_MIN);
  }
  void AllReduceMax(float* data, int64_t n) override {
    Reduce(data, n, MPI_FLOAT, sizeof(float), MPI_MAX);
  }

  void AllToAll(const int64_t* send, int64_t* recv, int64_t per_rank) override {
    OPENMOE_CHECK(per_rank <= INT_MAX);
    OPENMOE_MPI_CHECK(MPI_Alltoall(send, static_cast<int>(per_rank), MPI_INT64_T, recv,
                                   static_cast<int>(per_rank), MPI_INT64_T, comm_));
  }

  void AllToAllV(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                 const std::vector<int64_t>& recv_counts) override {
    VariableAllToAll(send, send_counts, recv, recv_counts, MPI_FLOAT);
  }
  void AllToAllV(const uint16_t* send, const std::vector<int64_t>& send_counts, uint16_t* recv,
                 const std::vector<int64_t>& recv_counts) override {
    VariableAllToAll(send, send_counts, recv, recv_counts, MPI_UINT16_T);
  }

  void Broadcast(std::string* bytes, int root) override {
    int64_t n = static_cast<int64_t>(bytes->size());
    OPENMOE_MPI_CHECK(MPI_Bcast(&n, 1, MPI_INT64_T, root, comm_));
    bytes->resize(n);
    if (n > 0) OPENMOE_MPI_CHECK(MPI_Bcast(bytes->data(), static_cast<int>(n), MPI_CHAR, root, comm_));
  }

  std::unique_ptr<PendingCollective> StartAllGatherV(const float* send, float* recv,
                                                     const std::vector<int64_t>& counts) override {
    return StartAllGather(send, recv, counts, MPI_FLOAT);
  }
  std::unique_ptr<PendingCollective> StartAllGatherV(const uint16_t* send, uint16_t* recv,
                                                     const std::vector<int64_t>& counts) override {
    return StartAllGather(send, recv, counts, MPI_UINT16_T);
  }
  std::unique_ptr<PendingCollective> StartAllToAllV(
      const float* send, const std::vector<int64_t>& send_counts, float* recv,
      const std::vector<int64_t>& recv_counts) override {
    return StartVariableAllToAll(send, send_counts, recv, recv_counts, MPI_FLOAT);
  }
  std::unique_ptr<PendingCollective> StartAllToAllV(
      const uint16_t* send, const std::vector<int64_t>& send_counts, uint16_t* recv,
      const std::vector<int64_t>& recv_counts) override {
    return StartVariableAllToAll(send, send_counts, recv, recv_counts, MPI_UINT16_T);
  }

  std::unique_ptr<Communicator> Duplicate() override {
    MPI_Comm dup;
    OPENMOE_MPI_CHECK(MPI_Comm_dup(comm_, &dup));
    return std::make_unique<MpiCommunicator>(dup, /*owned=*/true);
  }
  bool ThreadSafe() const override { return thread_multiple; }

  std::unique_ptr<Communicator> Split(int color, int key) override {
    MPI_Comm sub;
    OPENMOE_MPI_CHECK(MPI_Comm_split(comm_, color, key, &sub));
    return std::make_unique<MpiCommunicator>(sub, /*owned=*/true);
  }

  int LocalSize() override {
    MPI_Comm local;
    OPENMOE_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local));
    int local_size = 1;
    OPENMOE_MPI_CHECK(MPI_Comm_size(local, &local_size));
    OPENMOE_MPI_CHECK(MPI_Comm_free(&local));
    return local_size;
  }

 private:
  void Reduce(void* data, int64_t n, MPI_Datatype type, size_t elem, MPI_Op op = MPI_SUM) {
    // Chunked so that counts stay within int.
    constexpr int64_t kChunk = int64_t{1} << 28;
    char* p = static_cast<char*>(data);
    for (int64_t off = 0; off < n; off += kChunk) {
      const int count = static_cast<int>(std::min(kChunk, n - off));
      OPENMOE_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, p + off * elem, count, type, op, comm_));
    }
  }

  // Counts and displacements of an all-to-all-v from per-rank value counts (back to back, rank
  // order): {send counts, send displacements, receive counts, receive displacements}.
  void AllToAllVLayout(const std::vector<int64_t>& send_counts,
                       const std::vector<int64_t>& recv_counts, std::vector<int> (&out)[4],
                       int64_t* sent, int64_t* received) const {
    OPENMOE_CHECK(static_cast<int>(send_counts.size()) == size_ &&
                  static_cast<int>(recv_counts.size()) == size_);
    for (std::vector<int>& v : out) v.assign(size_, 0);
    int64_t so = 0, ro = 0;
    for (int q = 0; q < size_; ++q) {
      OPENMOE_CHECK_MSG(so + send_counts[q] <= INT_MAX && ro + recv_counts[q] <= INT_MAX,
                        "all-to-all of more than 2^31 values per rank");
      out[0][q] = static_cast<int>(send_counts[q]);
      out[1][q] = static_cast<int>(so);
      out[2][q] = static_cast<int>(recv_counts[q]);
      out[3][q] = static_cast<int>(ro);
      so += send_counts[q];
      ro += recv_counts[q];
    }
    *sent = so;
    *received = ro;
  }

  // MPI_Alltoallv of `type` values with displacements from the counts (back to back, rank order).
  void VariableAllToAll(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                        const std::vector<int64_t>& recv_counts, MPI_Datatype type) {
    std::vector<int> c[4];
    int64_t so = 0, ro = 0;
    AllToAllVLayout(send_counts, recv_counts, c, &so, &ro);
    // MPI wants valid buffers even for empty messages.
    float dummy = 0;
    OPENMOE_MPI_CHECK(MPI_Alltoallv(so > 0 ? send : &dummy, c[0].data(), c[1].data(), type,
                                    ro > 0 ? recv : &dummy, c[2].data(), c[3].data(), type, comm_));
  }

  // The nonblocking all-to-all-v as point-to-point messages, one per rank pair with rows (the
  // copy to itself made here), tagged by a sequence number of this communicator's nonblocking
  // all-to-all-v's: ranks start them in the same order, so the tags match, and several can be in
  // flight at once without their messages meeting. (Open MPI 4.1's MPI_Ialltoallv hung with
  // several in flight on 4 ranks under MPI_THREAD_MULTIPLE; the point-to-point path progresses in
  // the PML like any message.)
  std::unique_ptr<PendingCollective> StartVariableAllToAll(const void* send,
                                                           const std::vector<int64_t>& send_counts,
                                                           void* recv,
                                                           const std::vector<int64_t>& recv_counts,
                                                           MPI_Datatype type) {
    auto p = std::make_unique<MpiPendingSet>();
    std::vector<int> c[4];
    int64_t so = 0, ro = 0;
    AllToAllVLayout(send_counts, recv_counts, c, &so, &ro);
    int elem = 0;
    OPENMOE_MPI_CHECK(MPI_Type_size(type, &elem));
    const int tag = NextTag();
    const char* in = static_cast<const char*>(send);
    char* out = static_cast<char*>(recv);
    for (int q = 0; q < size_; ++q) {
      if (q == rank_ || c[2][q] == 0) continue;
      p->requests.emplace_back();
      OPENMOE_MPI_CHECK(MPI_Irecv(out + static_cast<int64_t>(c[3][q]) * elem, c[2][q], type, q,
                                  tag, comm_, &p->requests.back()));
    }
    for (int q = 0; q < size_; ++q) {
      if (q == rank_ || c[0][q] == 0) continue;
      p->requests.emplace_back();
      OPENMOE_MPI_CHECK(MPI_Isend(in + static_cast<int64_t>(c[1][q]) * elem, c[0][q], type, q,
                                  tag, comm_, &p->requests.back()));
    }
    OPENMOE_CHECK(c[0][rank_] == c[2][rank_]);
    if (c[0][rank_] > 0) {
      std::memcpy(out + static_cast<int64_t>(c[3][rank_]) * elem,
                  in + static_cast<int64_t>(c[1][rank_]) * elem,
                  static_cast<size_t>(c[0][rank_]) * elem);
    }
    return p;
  }

  // The nonblocking all-gather-v the same way: this rank's block to every other rank, every other
  // rank's block into its place in recv (the own block copied unless already in place).
  std::unique_ptr<PendingCollective> StartAllGather(const void* send, void* recv,
                                                    const std::vector<int64_t>& counts,
                                                    MPI_Datatype type) {
    OPENMOE_CHECK(static_cast<int>(counts.size()) == size_);
    auto p = std::make_unique<MpiPendingSet>();
    int elem = 0;
    OPENMOE_MPI_CHECK(MPI_Type_size(type, &elem));
    const int tag = NextTag();
    char* out = static_cast<char*>(recv);
    int64_t at = 0, mine_at = 0;
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) mine_at = at;
      if (q != rank_ && counts[q] > 0) {
        p->requests.emplace_back();
        OPENMOE_MPI_CHECK(MPI_Irecv(out + at * elem, ToInt(counts[q]), type, q, tag, comm_,
                                    &p->requests.back()));
      }
      at += counts[q];
    }
    const int64_t mine = counts[rank_];
    for (int q = 0; q < size_ && mine > 0; ++q) {
      if (q == rank_) continue;
      p->requests.emplace_back();
      OPENMOE_MPI_CHECK(MPI_Isend(send, ToInt(mine), type, q, tag, comm_, &p->requests.back()));
    }
    if (mine > 0 && static_cast<const char*>(send) != out + mine_at * elem)
      std::memmove(out + mine_at * elem, send, static_cast<size_t>(mine) * elem);
    return p;
  }

  // Tags of the point-to-point collectives: a sequence number of this communicator's, so ranks
  // starting them in the same order match, and several in flight never meet.
  int NextTag() { return kFirstP2pTag + static_cast<int>(p2p_sequence_++ % kP2pTags); }
  static constexpr int kFirstP2pTag = 1000;
  static constexpr int64_t kP2pTags = 30000;  // MPI_TAG_UB is at least 32767
  int64_t p2p_sequence_ = 0;

  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> MakeWorldCommunicator() {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, /*owned=*/false);
}

void InitMpi(int* argc, char*** argv) {
  int provided = MPI_THREAD_SINGLE;
  OPENMOE_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
  thread_multiple = provided == MPI_THREAD_MULTIPLE;
}

void FinalizeMpi() { OPENMOE_MPI_CHECK(MPI_Finalize()); }

void EndMpiAfterFailure() {
  int initialized = 0, finalized = 0;
  OPENMOE_MPI_CHECK(MPI_Initialized(&initialized));
  OPENMOE_MPI_CHECK(MPI_Finalized(&finalized));
  if (!initialized || finalized) return;
  int world = 1;
  OPENMOE_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world));
  // MPI_Abort does not return on success; should it return, finalizing is all that is left.
  if (world > 1) MPI_Abort(MPI_COMM_WORLD, 1);
  OPENMOE_MPI_CHECK(MPI_Finalize());
}

}  // namespace openmoe
