// fnv1a.h: the 64-bit FNV-1a hash, for plan hashes that ranks compare (deterministic, no seed).
#pragma once

#include <cstddef>
#include <cstdint>

namespace orthotron {

inline constexpr uint64_t kFnv1aOffset = 14695981039346656037ULL;

/// h folded with the bytes [data, data + n).
inline uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

/// h folded with the object representation of `v` (a trivially copyable value).
template <typename T>
uint64_t fnv1a_value(uint64_t h, const T& v) {
  return fnv1a(h, &v, sizeof v);
}

}  // namespace orthotron
