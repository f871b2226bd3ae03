// update_fused.cpp: the fused passes over a Newton-Schulz result (see the header). Compiled with
// -ffp-contract=off (optim/CMakeLists.txt): the only FMAs are the std::fma calls below.
#include "optim/update_fused.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace orthotron {

namespace {

enum class Pass { kCopy, kAdd, kDecayAdd };

struct Coeffs {
  float decay;
  float alpha;
};

inline __attribute__((always_inline)) float widen(float v) {
  return v;
}

inline __attribute__((always_inline)) float widen(uint16_t bf16) {
  const uint32_t bits = static_cast<uint32_t>(bf16) << 16;  // bfloat16 is float32's upper half
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

/// dst[i] for i in [0, n) from src[i], the pass's formula.
template <typename S>
inline __attribute__((always_inline)) void run(float* __restrict dst, const S* __restrict src, int64_t n, Pass pass,
                                               Coeffs c) {
  switch (pass) {
    case Pass::kCopy:
      for (int64_t i = 0; i < n; ++i) dst[i] = widen(src[i]);
      break;
    case Pass::kAdd:
      for (int64_t i = 0; i < n; ++i) dst[i] = std::fma(widen(src[i]), c.alpha, dst[i]);
      break;
    case Pass::kDecayAdd:
      for (int64_t i = 0; i < n; ++i) dst[i] = std::fma(widen(src[i]), c.alpha, dst[i] * c.decay);
      break;
  }
}

/// The transposed case's tile side: a tile of the source (kTile columns of kTile source rows) is
/// widened into a float32 block on the stack (4 KiB), transposed, and then applied row by row.
constexpr int64_t kTile = 32;

/// Rows [r0, r1) of dst ([m, n], contiguous) from src, a contiguous [n, m] buffer read transposed.
template <typename S>
inline __attribute__((always_inline)) void run_transposed(float* __restrict dst, const S* __restrict src, int64_t m,
                                                          int64_t n, int64_t r0, int64_t r1, Pass pass, Coeffs c) {
  float tile[kTile][kTile];
  for (int64_t i0 = r0; i0 < r1; i0 += kTile) {
    const int64_t rows = std::min(kTile, r1 - i0);
    for (int64_t j0 = 0; j0 < n; j0 += kTile) {
      const int64_t cols = std::min(kTile, n - j0);
      for (int64_t jj = 0; jj < cols; ++jj) {
        const S* from = src + (j0 + jj) * m + i0;
        for (int64_t ii = 0; ii < rows; ++ii) tile[ii][jj] = widen(from[ii]);
      }
      for (int64_t ii = 0; ii < rows; ++ii) run(dst + (i0 + ii) * n + j0, tile[ii], cols, pass, c);
    }
  }
}

__attribute__((target_clones("avx512f", "arch=haswell", "default"))) void run_f32(float* dst, const float* src,
                                                                                  int64_t n, Pass pass, Coeffs c) {
  run(dst, src, n, pass, c);
}

__attribute__((target_clones("avx512f", "arch=haswell", "default"))) void run_bf16(float* dst, const uint16_t* src,
                                                                                   int64_t n, Pass pass, Coeffs c) {
  run(dst, src, n, pass, c);
}

__attribute__((target_clones("avx512f", "arch=haswell", "default"))) void run_transposed_f32(
    float* dst, const float* src, int64_t m, int64_t n, int64_t r0, int64_t r1, Pass pass, Coeffs c) {
  run_transposed(dst, src, m, n, r0, r1, pass, c);
}

__attribute__((target_clones("avx512f", "arch=haswell", "default"))) void run_transposed_bf16(
    float* dst, const uint16_t* src, int64_t m, int64_t n, int64_t r0, int64_t r1, Pass pass, Coeffs c) {
  run_transposed(dst, src, m, n, r0, r1, pass, c);
}

bool is_transposed_view(const at::Tensor& t) {
  return t.dim() == 2 && t.stride(0) == 1 && t.stride(1) == t.size(0);
}

/// Grain: 32K elements (~0.5 MB of traffic): smaller matrices stay on one thread.
constexpr int64_t kGrain = 32768;

void apply(at::Tensor& dst, const at::Tensor& result, Pass pass, Coeffs c) {
  float* d = dst.data_ptr<float>();
  const bool bf16 = result.scalar_type() == at::kBFloat16;
  const void* s = result.data_ptr();
  if (result.is_contiguous()) {
    at::parallel_for(0, dst.numel(), kGrain, [&](int64_t begin, int64_t end) {
      if (bf16) {
        run_bf16(d + begin, static_cast<const uint16_t*>(s) + begin, end - begin, pass, c);
      } else {
        run_f32(d + begin, static_cast<const float*>(s) + begin, end - begin, pass, c);
      }
    });
    return;
  }
  const int64_t m = result.size(0), n = result.size(1);
  const int64_t tiles = (m + kTile - 1) / kTile;
  at::parallel_for(0, tiles, std::max<int64_t>(1, kGrain / (kTile * n)), [&](int64_t begin, int64_t end) {
    const int64_t r0 = begin * kTile, r1 = std::min(m, end * kTile);
    if (bf16) {
      run_transposed_bf16(d, static_cast<const uint16_t*>(s), m, n, r0, r1, pass, c);
    } else {
      run_transposed_f32(d, static_cast<const float*>(s), m, n, r0, r1, pass, c);
    }
  });
}

}  // namespace

bool ns_result_fused_supported(const at::Tensor& dst, const at::Tensor& result) {
  if (!dst.defined() || !result.defined()) return false;
  if (dst.scalar_type() != at::kFloat || !dst.device().is_cpu() || !dst.is_contiguous()) return false;
  if (result.scalar_type() != at::kFloat && result.scalar_type() != at::kBFloat16) return false;
  if (!result.device().is_cpu() || result.numel() != dst.numel()) return false;
  return result.is_contiguous() || is_transposed_view(result);
}

void muon_update_fused(at::Tensor& dst, const at::Tensor& result, double decay, double alpha) {
  // ATen rounds a Scalar to the float32 kernel's type before using it: the same here.
  const Coeffs c{static_cast<float>(decay), static_cast<float>(alpha)};
  apply(dst, result, c.decay == 1.0f ? Pass::kAdd : Pass::kDecayAdd, c);
}

void copy_ns_result_fused(at::Tensor& dst, const at::Tensor& result) {
  apply(dst, result, Pass::kCopy, Coeffs{1, 0});
}

}  // namespace orthotron
