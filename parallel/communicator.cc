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

namespace {

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

  // MPI_Alltoallv of `type` values with displacements from the counts (back to back, rank order).
  void VariableAllToAll(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                        const std::vector<int64_t>& recv_counts, MPI_Datatype type) {
    OPENMOE_CHECK(static_cast<int>(send_counts.size()) == size_ &&
                  static_cast<int>(recv_counts.size()) == size_);
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    int64_t so = 0, ro = 0;
    for (int q = 0; q < size_; ++q) {
      OPENMOE_CHECK_MSG(so + send_counts[q] <= INT_MAX && ro + recv_counts[q] <= INT_MAX,
                        "all-to-all of more than 2^31 values per rank");
      sc[q] = static_cast<int>(send_counts[q]);
      rc[q] = static_cast<int>(recv_counts[q]);
      sd[q] = static_cast<int>(so);
      rd[q] = static_cast<int>(ro);
      so += send_counts[q];
      ro += recv_counts[q];
    }
    // MPI wants valid buffers even for empty messages.
    float dummy = 0;
    OPENMOE_MPI_CHECK(MPI_Alltoallv(so > 0 ? send : &dummy, sc.data(), sd.data(), type,
                                    ro > 0 ? recv : &dummy, rc.data(), rd.data(), type, comm_));
  }

  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> MakeWorldCommunicator() {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, /*owned=*/false);
}

void InitMpi(int* argc, char*** argv) { OPENMOE_MPI_CHECK(MPI_Init(argc, argv)); }

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
