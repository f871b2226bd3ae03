// adamw.h: the AdamW update for one tensor (or one element slice of a flat buffer) and its
// validated options. Two kernels: `fused` (default; one multithreaded pass over parameter, gradient
// and both moments per element, at the memory limit) and `reference` (torch::optim::AdamW's
// operation order through ATen ops, bitwise equal to it, amsgrad off). Pure tensor math.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace orthotron {

/// Which AdamW kernel runs. fused: adamw_fused.h (float32 contiguous CPU tensors; anything else
/// takes the reference path); results within a few ulp of the reference (see adamw_fused.h).
/// reference: bitwise equal to torch::optim::AdamW.
enum class AdamWKernel { kFused, kReference };
std::string to_string(AdamWKernel k);

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  ///< decoupled: p <- p (1 - lr wd)
  AdamWKernel kernel = AdamWKernel::kFused;

  /// Throws InvalidArgument naming the first bad field and its valid range.
  void validate() const;
};

/// The per-tensor AdamW state. `step` counts the updates applied (bias correction uses it).
struct AdamWState {
  at::Tensor exp_avg;
  at::Tensor exp_avg_sq;
  int64_t step = 0;
};

/// One AdamW step in place on `param` (any shape; may be a view into a flat buffer) through
/// options.kernel. `state` tensors are created (zeros, param's shape/dtype) on first use.
/// ShapeError when the gradient or state shapes differ from the parameter's (nothing is changed).
/// No communication. Element-wise: a slice of a flat buffer gets the same bits as the whole.
void adamw_step(at::Tensor& param, const at::Tensor& grad, AdamWState& state, const AdamWOptions& options);

/// The reference kernel: torch::optim::AdamW's operation order through ATen ops, so results
/// match it bitwise on the same device. Expects checked shapes and allocated state.
void adamw_step_reference(at::Tensor& param, const at::Tensor& grad, AdamWState& state, const AdamWOptions& options);

}  // namespace orthotron
