// mpi_runtime.h: MPI start-up and shut-down for orthotron programs, the world communicator, and
// the fatal-error path that brings every rank down instead of letting the others hang.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "parallel/communicator.h"
#include "parallel/dist_env.h"

namespace orthotron {

/// Initializes MPI (MPI_THREAD_FUNNELED) unless already initialized; finalized at process exit.
/// Safe to call more than once. Every rank must call it.
void mpi_init(int* argc, char*** argv);

/// True once mpi_init ran (or MPI was initialized by someone else).
bool mpi_initialized();

/// A communicator over all ranks (a duplicate of MPI_COMM_WORLD), named "world". Calls mpi_init
/// if needed. Collective: every rank must call it.
std::unique_ptr<Communicator> mpi_world();

/// Prints "[orthotron] fatal on rank R (HOST): MESSAGE" to stderr and aborts every rank of the
/// job with MPI_Abort(exit_code). Without MPI it exits the process with exit_code.
[[noreturn]] void abort_job(const std::string& message, int exit_code = 1);

/// Runs `body` inside mpi_init / MPI_Finalize. An exception escaping `body` on any rank aborts the
/// whole job through abort_job, so mpirun ends within seconds with a non-zero exit code instead of
/// leaving the other ranks blocked in a collective. Returns body's exit code.
int run_distributed_main(int argc, char** argv, const std::function<int(int, char**)>& body);

}  // namespace orthotron
