// mpi_runtime.cpp: MPI start-up, the world communicator, and job-wide abort on a fatal error.
#include "parallel/mpi_runtime.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "base/errors.h"
#include "parallel/mpi_communicator.h"

namespace orthotron {

namespace {
void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}
}  // namespace

bool mpi_initialized() {
  int init = 0;
  MPI_Initialized(&init);
  return init != 0;
}

void mpi_init(int* argc, char*** argv) {
  if (mpi_initialized()) return;
  int provided = 0;
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  std::atexit(finalize_at_exit);
}

std::unique_ptr<Communicator> mpi_world() {
  if (!mpi_initialized()) mpi_init(nullptr, nullptr);
  MPI_Comm dup = MPI_COMM_NULL;
  check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &dup), "MPI_Comm_dup(MPI_COMM_WORLD)");
  return std::make_unique<MpiCommunicator>(dup, "world");
}

void abort_job(const std::string& message, int exit_code) {
  int rank = -1;
  if (mpi_initialized()) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  }
  std::fprintf(stderr, "[orthotron] fatal on rank %d (%s): %s\n", rank, host_name().c_str(), message.c_str());
  std::fflush(stderr);
  if (rank >= 0) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

int run_distributed_main(int argc, char** argv, const std::function<int(int, char**)>& body) {
  try {
    mpi_init(&argc, &argv);
    return body(argc, argv);
  } catch (const std::exception& e) {
    abort_job(e.what(), 1);
  } catch (...) {
    abort_job("unknown exception", 1);
  }
}

}  // namespace orthotron
