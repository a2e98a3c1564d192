// GoogleTest main for the suites that run under mpirun: every rank runs every test; a failure on
// any rank makes mpirun exit non-zero. Only rank 0 prints the progress lines.
#include <mpi.h>

#include "gtest/gtest.h"
#include "parallel/communicator.h"

int main(int argc, char** argv) {
  openmoe::InitMpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    // Keep failure messages (they name the rank's values) but drop the per-test chatter.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int result = RUN_ALL_TESTS();
  int worst = result;
  MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && worst != 0 && result == 0) std::fprintf(stderr, "a test failed on another rank\n");
  MPI_Finalize();
  return worst;
}
