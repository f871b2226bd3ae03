// dist_env.h: where this process sits in the job: rank, world size, local rank and host, read from
// Open MPI's environment (OMPI_COMM_WORLD_*) with torchrun/Megatron's RANK/WORLD_SIZE/LOCAL_RANK
// as a fallback. No MPI calls.
#pragma once

#include <string>

namespace orthotron {

struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  ///< rank among the processes on this host; picks the GPU
  int local_size = 1;
  std::string host;
  std::string source;  ///< "openmpi", "torchrun" or "single-process"
};

/// Reads the launcher's environment. Throws InvalidArgument when a variable is present but not a
/// non-negative integer, or when rank >= world size (naming the variable and its value).
DistEnv read_dist_env();

/// This machine's host name.
std::string host_name();

}  // namespace orthotron
