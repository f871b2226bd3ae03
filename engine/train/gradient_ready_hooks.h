// gradient_ready_hooks.h: tells the distributed optimizer, from autograd, the moment each parameter's
// gradient is final, so the reduce-scatter of every complete gradient bucket starts during backward
// (DistributedMuonWithAdamW::begin_backward_reduction) instead of after it. It goes through
// torch::autograd::impl::set_post_acc_grad_hooks, LibTorch's only C++ entry to the hooks that
// Python's Tensor.register_post_accumulate_grad_hook uses (an impl namespace: checked against 2.11).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "optim/distributed_muon_with_adamw.h"

namespace orthotron {

/// Registers one post-accumulate-grad hook on every parameter of `optimizer` (its live tensors: the
/// model's leaves). After autograd has accumulated a parameter's gradient, the hook calls
/// optimizer.gradient_ready(i) on the thread running backward; that does nothing unless a reduction
/// is armed (begin_backward_reduction .. end_backward_reduction). A tensor holds at most one C++
/// post-accumulate-grad hook: InvalidArgument naming the parameter when one is already set, or when
/// a parameter is not a leaf that requires grad. The destructor removes the hooks; `optimizer` must
/// outlive this object. Local, no communication.
class GradientReadyHooks {
 public:
  explicit GradientReadyHooks(DistributedMuonWithAdamW& optimizer);
  ~GradientReadyHooks();
  GradientReadyHooks(const GradientReadyHooks&) = delete;
  GradientReadyHooks& operator=(const GradientReadyHooks&) = delete;

 private:
  std::vector<at::Tensor> params_;  // those with a hook of ours
};

}  // namespace orthotron
