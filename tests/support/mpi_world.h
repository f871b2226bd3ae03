// mpi_world.h: the world communicator of a multi-rank test binary (mpi_gtest_main.cpp starts MPI),
// created on first use and kept for the process (every rank of the job must call it), and a
// directory shared by the ranks.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "parallel/mpi_runtime.h"

namespace orthotron::testing {

inline Communicator& world() {
  static std::unique_ptr<Communicator> w = mpi_world();
  return *w;
}

/// A directory path every rank agrees on (named by rank 0's process id), removed by rank 0 when
/// every rank is done with it. Construction and destruction are collective over world().
struct SharedRoot {
  std::string path;
  explicit SharedRoot(const std::string& tag) {
    at::Tensor id = at::full({1}, static_cast<int64_t>(::getpid()), at::kLong);
    world().broadcast(id, 0);
    path = ::testing::TempDir() + "/orthotron_" + tag + "_" + std::to_string(id.item<int64_t>());
  }
  ~SharedRoot() {
    world().barrier();
    if (world().rank() == 0) {
      const int rc = std::system(("rm -rf '" + path + "'").c_str());
      (void)rc;
    }
  }
};

}  // namespace orthotron::testing
