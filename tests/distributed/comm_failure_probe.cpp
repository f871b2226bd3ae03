// comm_failure_probe.cpp: a program that fails on purpose, for tests/distributed/expect_job_failure.sh.
//   throw: rank 1 throws while the other ranks wait in an all_reduce; the exception must abort the job.
//   hang:  rank 1 never joins the all_reduce; the others' watchdog (2 s timeout) must abort the job.
#include <ATen/ATen.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "parallel/mpi_runtime.h"

int main(int argc, char** argv) {
  return orthotron::run_distributed_main(argc, argv, [](int ac, char** av) {
    const std::string mode = ac > 1 ? av[1] : "throw";
    auto world = orthotron::mpi_world();
    world->set_timeout(std::chrono::milliseconds(2000));
    at::Tensor t = at::ones({1024});
    world->all_reduce(t, orthotron::ReduceOp::kSum);  // everyone is alive and talking
    if (world->rank() == 1) {
      if (mode == "throw") throw std::runtime_error("injected failure in rank 1 before its all_reduce");
      std::this_thread::sleep_for(std::chrono::seconds(3600));  // hang: never join
    }
    world->all_reduce(t, orthotron::ReduceOp::kSum);
    return 0;
  });
}
