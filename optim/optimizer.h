// optimizer.h: the interface the single-process and distributed MuonWithAdamW share, so an engine
// drives either one through the same calls.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "optim/param_routing.h"
#include "optim/state_dict.h"

namespace orthotron {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  /// One step over the parameters' current gradients (collective in distributed mode).
  virtual void step() = 0;
  /// Resets every parameter's gradient to undefined.
  virtual void zero_grad() = 0;
  /// The state this process holds, keyed by parameter name (see state_dict.h).
  virtual StateDict state_dict() const = 0;
  /// Validates everything, then restores (collective in distributed mode). StateDictError on mismatch.
  /// Files are not the optimizer's business: engine/optimizer_state_files.h writes and reads them.
  virtual LoadReport load_state_dict(const StateDict& sd, const LoadOptions& options) = 0;
  /// The resolved parameter -> group assignment as a table.
  virtual std::string assignment_table() const = 0;
  /// Mutable group access for learning-rate schedules; InvalidArgument for an unknown name.
  virtual ParamGroup& group(const std::string& name) = 0;

  /// Global gradient-norm clipping inside step(). Every step computes the L2 norm over all
  /// gradients (the data-parallel average, each element counted once, in distributed mode); when it
  /// exceeds `max_norm`, every gradient is scaled by max_norm / (norm + 1e-6) before any update, as
  /// torch.nn.utils.clip_grad_norm_ does (the single-process container scales .grad in place).
  /// 0 (the default) never scales. InvalidArgument for a negative or non-finite value.
  void set_max_grad_norm(double max_norm);
  double max_grad_norm() const { return max_grad_norm_; }
  /// The global gradient norm of the last step, before clipping (NaN or Inf when a gradient was not finite).
  double last_grad_norm() const { return last_grad_norm_; }
  /// True when the last step changed nothing because the gradient norm was not finite: no
  /// parameter, optimizer state or step count moved (the same on every rank in distributed mode).
  bool last_step_skipped() const { return last_step_skipped_; }

 protected:
  /// Records `norm` and returns the factor to scale gradients by (1 when no clipping applies).
  /// Sets last_step_skipped() when the norm is not finite; the caller then returns without updating.
  double begin_clipped_step(double norm);

 private:
  double max_grad_norm_ = 0;
  double last_grad_norm_ = 0;
  bool last_step_skipped_ = false;
};

/// The squared L2 norm of `t`. Contiguous float32 and float64 tensors go through a dot product of
/// the flattened tensor (BLAS, multithreaded: 3.0 ms against 7.9 ms for linalg_vector_norm over
/// the benchmark GPT's 33.6M gradients at 2 threads here), in t's dtype; others through
/// linalg_vector_norm, squared. Non-finite values give a non-finite result either way.
double squared_l2_norm(const at::Tensor& t);

/// sqrt(sum of squared_l2_norm) over `tensors` (undefined and empty ones skipped), summed in double.
double global_l2_norm(const std::vector<at::Tensor>& tensors);

}  // namespace orthotron
