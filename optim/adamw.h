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

/// Zero moments for `param`: its shape and dtype, contiguous, on its device. On the CPU, for
/// tensors of 64 KiB and more, exp_avg starts 1 KiB and exp_avg_sq 2 KiB past the parameter's
/// address modulo 4 KiB (each a view into a storage 4 KiB longer than the tensor). AdamW streams
/// the four tensors in step; when all start at the same offset in a page, as separate large
/// allocations do, their lines share cache sets, and a plain 33.6M-element pass over such
/// tensors took 1.2x to 1.5x as long as over staggered ones (2 threads, this machine).
AdamWState adamw_state_for(const at::Tensor& param);

/// Zeros shaped like `param`, contiguous, whose first byte lies `stagger_bytes` (0 to 4095) past
/// param's first byte modulo 4 KiB: the placement adamw_state_for uses (1024 and 2048). Where it
/// does not apply (not on the CPU, not contiguous, under 64 KiB, or a stagger that is not a
/// multiple of the element size) plain zeros_like. InvalidArgument for a stagger outside [0, 4096).
at::Tensor zeros_at_page_offset(const at::Tensor& param, int64_t stagger_bytes);

/// Moments loaded from a checkpoint, installed in `state` as copies: placed as adamw_state_for
/// places fresh ones when their shape and dtype are param's, else plain copies on param's device.
void adamw_restore_moments(const at::Tensor& param, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                           AdamWState& state);

/// One AdamW step in place on `param` (any shape; may be a view into a flat buffer) through
/// options.kernel. `state` tensors are created on first use (adamw_state_for).
/// ShapeError when the gradient or state shapes differ from the parameter's (nothing is changed).
/// No communication. Element-wise: a slice of a flat buffer gets the same bits as the whole.
void adamw_step(at::Tensor& param, const at::Tensor& grad, AdamWState& state, const AdamWOptions& options);

/// The reference kernel: torch::optim::AdamW's operation order through ATen ops, so results
/// match it bitwise on the same device. Expects checked shapes and allocated state.
void adamw_step_reference(at::Tensor& param, const at::Tensor& grad, AdamWState& state, const AdamWOptions& options);

}  // namespace orthotron
