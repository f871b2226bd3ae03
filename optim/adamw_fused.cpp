// adamw_fused.cpp: the fused AdamW loop. This file is compiled with -ffp-contract=off and
// -fno-math-errno (optim/CMakeLists.txt): no FMA contraction (bits independent of the CPU), and
// sqrt that vectorizes.
#include "optim/adamw_fused.h"

#include <ATen/Parallel.h>

#include <cmath>

namespace orthotron {

namespace {

struct FusedCoefficients {
  float decay;  // 1 - lr wd
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float step_size;  // lr / bc1
  float sqrt_bc2;   // sqrt(bc2)
  float eps;
};

// Elements [begin, end). Plain loop over restrict pointers: GCC vectorizes it at -O3, once per
// instruction set below, and the loader picks the widest the CPU has. Without contraction, every
// clone computes the same bits (IEEE mul, add, div and sqrt are exactly rounded at any width).
__attribute__((target_clones("avx512f", "avx2", "default"))) void adamw_range(float* __restrict p,
                                                                              const float* __restrict g,
                                                                              float* __restrict m, float* __restrict v,
                                                                              int64_t begin, int64_t end,
                                                                              const FusedCoefficients& c) {
  for (int64_t i = begin; i < end; ++i) {
    const float gi = g[i];
    const float pi = p[i] * c.decay;
    const float mi = m[i] * c.beta1 + gi * c.one_minus_beta1;
    const float vi = v[i] * c.beta2 + (c.one_minus_beta2 * gi) * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / c.sqrt_bc2 + c.eps;
    p[i] = pi - c.step_size * (mi / denom);
  }
}

}  // namespace

bool adamw_fused_supported(const at::Tensor& param, const at::Tensor& grad, const AdamWState& state) {
  for (const at::Tensor* t : {&param, &grad, &state.exp_avg, &state.exp_avg_sq}) {
    if (!t->defined() || t->scalar_type() != at::kFloat || !t->device().is_cpu() || !t->is_contiguous() ||
        t->numel() != param.numel()) {
      return false;
    }
  }
  return true;
}

void adamw_step_fused(at::Tensor& param, const at::Tensor& grad, AdamWState& state, const AdamWOptions& options) {
  state.step += 1;
  const double bc1 = 1 - std::pow(options.beta1, static_cast<double>(state.step));
  const double bc2 = 1 - std::pow(options.beta2, static_cast<double>(state.step));
  const FusedCoefficients c{static_cast<float>(1 - options.lr * options.weight_decay),
                            static_cast<float>(options.beta1),
                            static_cast<float>(1 - options.beta1),
                            static_cast<float>(options.beta2),
                            static_cast<float>(1 - options.beta2),
                            static_cast<float>(options.lr / bc1),
                            static_cast<float>(std::sqrt(bc2)),
                            static_cast<float>(options.eps)};
  float* p = param.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  float* m = state.exp_avg.data_ptr<float>();
  float* v = state.exp_avg_sq.data_ptr<float>();
  // Grain: 32K elements (~0.9 MB of traffic): smaller tensors stay on one thread.
  at::parallel_for(0, param.numel(), 32768,
                   [&](int64_t begin, int64_t end) { adamw_range(p, g, m, v, begin, end, c); });
}

}  // namespace orthotron
