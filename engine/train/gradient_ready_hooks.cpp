// gradient_ready_hooks.cpp: autograd post-accumulate-grad hooks -> DistributedMuonWithAdamW::gradient_ready.
#include "engine/train/gradient_ready_hooks.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <memory>

#include "base/errors.h"

namespace orthotron {

namespace {

class GradientReady : public torch::autograd::PostAccumulateGradHook {
 public:
  GradientReady(DistributedMuonWithAdamW& optimizer, size_t index) : optimizer_(optimizer), index_(index) {}
  void operator()(const torch::autograd::Variable& /*param*/) override { optimizer_.gradient_ready(index_); }

 private:
  DistributedMuonWithAdamW& optimizer_;
  size_t index_;
};

}  // namespace

GradientReadyHooks::GradientReadyHooks(DistributedMuonWithAdamW& optimizer) {
  const NamedParameters& params = optimizer.parameters();
  for (const auto& p : params) {
    if (!p.tensor.requires_grad() || !p.tensor.is_leaf()) {
      throw InvalidArgument(
          "GradientReadyHooks: parameter '" + p.name + "' must be a leaf tensor that requires grad (requires_grad " +
          (p.tensor.requires_grad() ? "true" : "false") + ", leaf " + (p.tensor.is_leaf() ? "true" : "false") + ")");
    }
    if (torch::autograd::impl::post_acc_grad_hooks(p.tensor) != nullptr) {
      throw InvalidArgument("GradientReadyHooks: parameter '" + p.name +
                            "' already has a post-accumulate-grad hook (a tensor holds one)");
    }
  }
  for (size_t i = 0; i < params.size(); ++i) {
    torch::autograd::impl::set_post_acc_grad_hooks(params[i].tensor, std::make_unique<GradientReady>(optimizer, i));
    params_.push_back(params[i].tensor);
  }
}

GradientReadyHooks::~GradientReadyHooks() {
  for (const auto& p : params_) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

}  // namespace orthotron
