// mpi_world.h: the world communicator of a multi-rank test binary (mpi_gtest_main.cpp starts MPI),
// created on first use and kept for the process. Every rank of the job must call it.
#pragma once

#include <memory>

#include "parallel/mpi_runtime.h"

namespace orthotron::testing {

inline Communicator& world() {
  static std::unique_ptr<Communicator> w = mpi_world();
  return *w;
}

}  // namespace orthotron::testing
