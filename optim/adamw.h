// adamw.h: the AdamW update for one tensor (or one element slice of a flat buffer), equal to
// torch::optim::AdamW (amsgrad off) to the bit, and its validated options. Pure tensor math.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace orthotron {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  ///< decoupled: p <- p (1 - lr wd)

  /// Throws InvalidArgument naming the first bad field and its valid range.
  void validate() const;
};

/// The per-tensor AdamW state. `step` counts the updates applied (bias correction uses it).
struct AdamWState {
  at::Tensor exp_avg;
  at::Tensor exp_avg_sq;
  int64_t step = 0;
};

/// One AdamW step in place on `param` (any shape; may be a view into a flat buffer) with the
/// same operation order as torch::optim::AdamW, so results match it bitwise on the same device.
/// `state` tensors are created (zeros, param's shape/dtype) on first use. No communication.
void adamw_step(at::Tensor& param, const at::Tensor& grad, AdamWState& state, const AdamWOptions& options);

}  // namespace orthotron
