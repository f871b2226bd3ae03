// adamw.cpp: AdamW's checks and kernel dispatch, and the reference kernel written in
// torch::optim::AdamW's operation order.
#include "optim/adamw.h"

#include <cmath>
#include <sstream>

#include "base/errors.h"
#include "optim/adamw_fused.h"

namespace orthotron {

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
    state.exp_avg = at::zeros_like(param, at::MemoryFormat::Preserve);
    state.exp_avg_sq = at::zeros_like(param, at::MemoryFormat::Preserve);
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
