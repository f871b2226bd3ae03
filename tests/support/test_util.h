// test_util.h: small assertion helpers shared by the GoogleTest suites.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <exception>
#include <string>

namespace orthotron::testing {

/// True when `needle` occurs in `haystack`.
inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// The largest absolute element-wise difference, computed in fp64.
inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

/// A path under ::testing::TempDir() that no other test process can be using: it names the running
/// test and this process. CTest runs test cases as parallel processes, so a fixed name races.
inline std::string unique_temp_path(const std::string& tag) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string who = info ? std::string(info->test_suite_name()) + "." + info->name() : "no_test";
  return ::testing::TempDir() + "/orthotron_" + who + "_" + std::to_string(::getpid()) + "_" + tag;
}

/// Runs `fn`, expecting it to throw `Expected`; returns the message. A different exception type or
/// no exception is a test failure (and returns "").
template <typename Expected, typename Fn>
std::string thrown_message(Fn&& fn) {
  try {
    fn();
  } catch (const Expected& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a different exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

}  // namespace orthotron::testing
