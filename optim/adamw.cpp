// adamw.cpp: AdamW's checks and kernel dispatch, and the reference kernel written in
// torch::optim::AdamW's operation order.
#include "optim/adamw.h"

#include <cmath>
#include <cstdint>
#include <sstream>

#include "base/errors.h"
#include "optim/adamw_fused.h"

namespace orthotron {

namespace {

constexpr int64_t kPageBytes = 4096;
constexpr int64_t kStaggerMinBytes = 64 * 1024;

}  // namespace

namespace {

/// A tensor shaped like `param` placed as zeros_at_page_offset places it; zero-filled only when
/// `zero` (a restore overwrites every element anyway).
at::Tensor at_page_offset(const at::Tensor& param, int64_t stagger, bool zero) {
  if (stagger < 0 || stagger >= kPageBytes) {
    throw InvalidArgument("zeros_at_page_offset: stagger must lie in [0, 4096) bytes, got " + std::to_string(stagger));
  }
  auto plain = [&] {
    return zero ? at::zeros_like(param, at::MemoryFormat::Preserve) : at::empty_like(param, at::MemoryFormat::Preserve);
  };
  const int64_t elem = static_cast<int64_t>(param.element_size());
  if (!param.device().is_cpu() || !param.is_contiguous() || param.numel() * elem < kStaggerMinBytes) return plain();
  const auto param_address = reinterpret_cast<uintptr_t>(param.data_ptr());
  const int64_t total = param.numel() + kPageBytes / elem;
  at::Tensor storage = zero ? at::zeros({total}, param.options()) : at::empty({total}, param.options());
  const auto base = reinterpret_cast<uintptr_t>(storage.data_ptr());
  const auto target = (param_address + static_cast<uintptr_t>(stagger)) % kPageBytes;
  const int64_t shift = static_cast<int64_t>((target + kPageBytes - base % kPageBytes) % kPageBytes);
  // A stagger (or a parameter address) that is not a multiple of the element size: plain placement.
  if (shift % elem != 0) return plain();
  return storage.narrow(0, shift / elem, param.numel()).view(param.sizes());
}

AdamWState placed_state(const at::Tensor& param, bool zero) {
  AdamWState state;
  state.exp_avg = at_page_offset(param, kPageBytes / 4, zero);
  state.exp_avg_sq = at_page_offset(param, kPageBytes / 2, zero);
  return state;
}

}  // namespace

at::Tensor zeros_at_page_offset(const at::Tensor& param, int64_t stagger) {
  return at_page_offset(param, stagger, /*zero=*/true);
}

AdamWState adamw_state_for(const at::Tensor& param) {
  return placed_state(param, /*zero=*/true);
}

void adamw_restore_moments(const at::Tensor& param, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                           AdamWState& state) {
  auto fits = [&](const at::Tensor& t) {
    return t.sizes().equals(param.sizes()) && t.scalar_type() == param.scalar_type();
  };
  if (fits(exp_avg) && fits(exp_avg_sq)) {
    AdamWState placed = placed_state(param, /*zero=*/false);  // every element is written next
    state.exp_avg = placed.exp_avg.copy_(exp_avg);
    state.exp_avg_sq = placed.exp_avg_sq.copy_(exp_avg_sq);
    return;
  }
  state.exp_avg = exp_avg.to(param.device(), /*non_blocking=*/false, /*copy=*/true);
  state.exp_avg_sq = exp_avg_sq.to(param.device(), /*non_blocking=*/false, /*copy=*/true);
}

void adamw_step(at::Tensor& param, const at::Tensor& grad, AdamWState& state, const AdamWOptions& options) {
  if (!grad.sizes().equals(param.sizes())) {
    throw ShapeError("AdamW: gradient shape " + c10::str(grad.sizes()) + " differs from parameter shape " +
                     c10::str(param.sizes()));
  }
  if (state.exp_avg.defined() &&
      (!state.exp_avg.sizes().equals(param.sizes()) || !state.exp_avg_sq.sizes().equals(param.sizes()))) {
    throw ShapeError("AdamW: state shapes " + c10::str(state.exp_avg.sizes()) + " / " +
                     c10::str(state.exp_avg_sq.sizes()) + " differ from parameter shape " + c10::str(param.sizes()));
  }
  if (!state.exp_avg.defined()) {
    AdamWState fresh = adamw_state_for(param);
    state.exp_avg = std::move(fresh.exp_avg);
    state.exp_avg_sq = std::move(fresh.exp_avg_sq);
  }
  if (options.kernel == AdamWKernel::kFused && adamw_fused_supported(param, grad, state)) {
    adamw_step_fused(param, grad, state, options);
    return;
  }
  adamw_step_reference(param, grad, state, options);
}

void adamw_step_reference(at::Tensor& param, const at::Tensor& grad, AdamWState& state, const AdamWOptions& options) {
  param.mul_(1 - options.lr * options.weight_decay);
  state.step += 1;
  const double bias_correction1 = 1 - std::pow(options.beta1, static_cast<double>(state.step));
  const double bias_correction2 = 1 - std::pow(options.beta2, static_cast<double>(state.step));
  state.exp_avg.mul_(options.beta1).add_(grad, 1 - options.beta1);
  state.exp_avg_sq.mul_(options.beta2).addcmul_(grad, grad, 1 - options.beta2);
  at::Tensor denom = (state.exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(options.eps);
  const double step_size = options.lr / bias_correction1;
  param.addcdiv_(state.exp_avg, denom, -step_size);
}

}  // namespace orthotron
