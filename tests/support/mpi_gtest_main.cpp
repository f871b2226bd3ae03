// mpi_gtest_main.cpp: the main() of every multi-rank GoogleTest binary. Each rank runs every test
// (collectives need all ranks); rank 0 prints the usual report, other ranks print only failures,
// prefixed with their rank. A failure on any rank makes that rank, and so mpirun, exit non-zero.
#include <gtest/gtest.h>

#include <mpi.h>

#include <cstdio>

#include "base/debug_checks.h"
#include "parallel/mpi_runtime.h"

namespace {

// Prints failed assertions of a non-zero rank, so a failure seen only there is not lost.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                 r.summary());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
    }
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  orthotron::mpi_init(&argc, &argv);
  orthotron::set_debug_checks(true);  // every step of every test is audited against its plan
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  const int result = RUN_ALL_TESTS();
  // Agree on the outcome so every rank exits with the same code.
  int any_failed = result != 0 ? 1 : 0, global = 0;
  MPI_Allreduce(&any_failed, &global, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return global;
}
