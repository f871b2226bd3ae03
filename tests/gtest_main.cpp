// gtest_main.cpp: the main() of the single-process GoogleTest binaries. Tests use one intra-op
// thread: the suites run two at a time on small CPUs, and an oversubscribed OpenMP pool is slow.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  at::set_num_threads(1);
  return RUN_ALL_TESTS();
}
