// momentum_fused.cpp: the fused EMA momentum and Nesterov pass (see the header). Compiled with
// -ffp-contract=off (optim/CMakeLists.txt): the only FMAs are the std::fma calls below.
#include "optim/momentum_fused.h"

#include <ATen/Parallel.h>

#include <cmath>

namespace orthotron {

namespace {

struct LerpWeight {
  float coeff;    // w when |w| < 0.5, else w - 1
  bool from_end;  // the fma's addend: b (from_end) or a
};

LerpWeight lerp_weight(double w) {
  const float wf = static_cast<float>(w);
  const bool small = std::abs(wf) < 0.5f;
  return {small ? wf : wf - 1.0f, !small};
}

// Elements [begin, end): m <- lerp(m, g, w1); u <- lerp(g, m, w2).
__attribute__((target_clones("avx512f", "arch=haswell", "default"))) void ema_nesterov_range(
    const float* __restrict g, float* __restrict m, float* __restrict u, int64_t begin, int64_t end, LerpWeight w1,
    LerpWeight w2) {
  for (int64_t i = begin; i < end; ++i) {
    const float gi = g[i], mi = m[i];
    const float m_new = std::fma(w1.coeff, gi - mi, w1.from_end ? gi : mi);
    m[i] = m_new;
    u[i] = std::fma(w2.coeff, m_new - gi, w2.from_end ? m_new : gi);
  }
}

}  // namespace

bool ema_nesterov_fused_supported(const at::Tensor& grad, const at::Tensor& momentum) {
  for (const at::Tensor* t : {&grad, &momentum}) {
    if (!t->defined() || t->scalar_type() != at::kFloat || !t->device().is_cpu() || !t->is_contiguous()) return false;
  }
  return grad.numel() == momentum.numel();
}

at::Tensor ema_nesterov_fused(const at::Tensor& grad, at::Tensor& momentum, double beta) {
  at::Tensor direction = at::empty(grad.sizes(), grad.options().memory_format(at::MemoryFormat::Contiguous));
  const float* g = grad.data_ptr<float>();
  float* m = momentum.data_ptr<float>();
  float* u = direction.data_ptr<float>();
  const LerpWeight w1 = lerp_weight(1.0 - beta), w2 = lerp_weight(beta);
  // Grain: 32K elements (~0.5 MB of traffic): smaller tensors stay on one thread.
  at::parallel_for(0, grad.numel(), 32768,
                   [&](int64_t begin, int64_t end) { ema_nesterov_range(g, m, u, begin, end, w1, w2); });
  return direction;
}

}  // namespace orthotron
