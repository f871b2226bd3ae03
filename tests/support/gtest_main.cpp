// gtest_main.cpp: the main() of the single-process GoogleTest binaries. Debug checks are on. Tests use one intra-op
// thread: the suites run two at a time on small CPUs, and an oversubscribed OpenMP pool is slow.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "base/debug_checks.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  at::set_num_threads(1);
  orthotron::set_debug_checks(true);  // every step of every test is audited against its plan
  return RUN_ALL_TESTS();
}
