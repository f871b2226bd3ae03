// dist_env.cpp: launcher environment -> DistEnv.
#include "parallel/dist_env.h"

#include <unistd.h>

#include <cstdlib>

#include "base/errors.h"

namespace orthotron {

namespace {

// The value of `name` as a non-negative int, or -1 when unset.
int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > 1 << 24) {
    throw InvalidArgument(std::string("environment variable ") + name + "='" + v + "' is not a non-negative integer");
  }
  return static_cast<int>(x);
}

}  // namespace

std::string host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown-host";
  return buf;
}

DistEnv read_dist_env() {
  DistEnv e;
  e.host = host_name();
  if (env_int("OMPI_COMM_WORLD_SIZE") >= 0) {
    e.source = "openmpi";
    e.rank = env_int("OMPI_COMM_WORLD_RANK");
    e.world_size = env_int("OMPI_COMM_WORLD_SIZE");
    e.local_rank = std::max(0, env_int("OMPI_COMM_WORLD_LOCAL_RANK"));
    e.local_size = std::max(1, env_int("OMPI_COMM_WORLD_LOCAL_SIZE"));
  } else if (env_int("WORLD_SIZE") >= 0) {
    e.source = "torchrun";
    e.rank = std::max(0, env_int("RANK"));
    e.world_size = env_int("WORLD_SIZE");
    e.local_rank = std::max(0, env_int("LOCAL_RANK"));
    e.local_size = std::max(1, env_int("LOCAL_WORLD_SIZE"));
  } else {
    e.source = "single-process";
  }
  if (e.world_size < 1 || e.rank < 0 || e.rank >= e.world_size) {
    throw InvalidArgument("launcher environment (" + e.source + ") gives rank " + std::to_string(e.rank) +
                          " of world size " + std::to_string(e.world_size));
  }
  return e;
}

}  // namespace orthotron
