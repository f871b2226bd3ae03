// debug_checks.cpp: one process-wide flag, initialized from ORTHOTRON_DEBUG_CHECKS.
#include "base/debug_checks.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace orthotron {

namespace {

std::atomic<int>& flag() {
  // -1: not read yet.
  static std::atomic<int> value{-1};
  return value;
}

}  // namespace

bool debug_checks_enabled() {
  int v = flag().load();
  if (v < 0) {
    const char* env = std::getenv("ORTHOTRON_DEBUG_CHECKS");
    const int from_env = (env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0) ? 1 : 0;
    // Keep a value set_debug_checks stored meanwhile: on failure, v receives it.
    v = -1;
    if (flag().compare_exchange_strong(v, from_env)) v = from_env;
  }
  return v == 1;
}

void set_debug_checks(bool on) {
  flag().store(on ? 1 : 0);
}

}  // namespace orthotron
