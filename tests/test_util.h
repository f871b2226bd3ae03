// test_util.h: small assertion helpers shared by the GoogleTest suites.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <string>

namespace orthotron::testing {

/// True when `needle` occurs in `haystack`.
inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
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
