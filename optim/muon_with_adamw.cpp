// muon_with_adamw.cpp: routing and the step of the MuonWithAdamW container.
#include "optim/muon_with_adamw.h"

#include <c10/core/GradMode.h>

#include <tuple>

#include "base/debug_checks.h"
#include "base/errors.h"
#include "optim/ns_audit.h"

namespace orthotron {

MuonWithAdamW::MuonWithAdamW(NamedParameters params, std::vector<ParamGroup> groups, std::vector<RoutingRule> rules,
                             SplitRegistry splits)
    : groups_(std::move(groups)), splits_(std::move(splits)) {
  validate_groups(groups_);
  assignment_ = route_parameters(logical_shapes(params), groups_, rules);
  check_split_routing(assignment_, groups_, splits_);
  plan_ = plan_params(assignment_, groups_, splits_);
  for (size_t i = 0; i < params.size(); ++i) {
    Slot s;
    s.param = params[i];
    s.group = assignment_[i].group_index;
    index_[s.param.name] = slots_.size();
    slots_.push_back(std::move(s));
  }
}

ParamGroup& MuonWithAdamW::group(const std::string& name) {
  for (auto& g : groups_) {
    if (g.name == name) return g;
  }
  throw InvalidArgument("MuonWithAdamW has no group named '" + name + "'");
}

const MuonWithAdamW::Slot& MuonWithAdamW::slot(const std::string& param) const {
  auto it = index_.find(param);
  if (it == index_.end()) throw InvalidArgument("MuonWithAdamW holds no parameter named '" + param + "'");
  return slots_[it->second];
}

const at::Tensor& MuonWithAdamW::muon_momentum(const std::string& param) const {
  return slot(param).momentum;
}
const AdamWState& MuonWithAdamW::adamw_state(const std::string& param) const {
  return slot(param).adamw;
}
int64_t MuonWithAdamW::step_count(const std::string& param) const {
  const Slot& s = slot(param);
  return groups_[s.group].algorithm == Algorithm::kMuon ? s.muon_steps : s.adamw.step;
}

void MuonWithAdamW::zero_grad() {
  for (auto& s : slots_) {
    if (s.param.tensor.grad().defined()) s.param.tensor.mutable_grad() = at::Tensor();
  }
}

void MuonWithAdamW::step() {
  c10::NoGradGuard no_grad;
  std::vector<at::Tensor> grads(slots_.size());
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    check_logical_shape(assignment_[i], s.param.tensor);
    grads[i] = s.param.tensor.grad();
    if (grads[i].defined() && !grads[i].sizes().equals(s.param.tensor.sizes())) {
      throw ShapeError("parameter '" + s.param.name + "': gradient shape " + c10::str(grads[i].sizes()) +
                       " differs from parameter shape " + c10::str(s.param.tensor.sizes()));
    }
  }
  const double clip = begin_clipped_step(global_l2_norm(grads));
  if (last_step_skipped()) return;
  std::vector<MuonTask> tasks;
  std::vector<size_t> stepped;  // slot indices of the Muon parameters this step updates
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    const at::Tensor& grad = grads[i];
    if (!grad.defined()) continue;
    if (clip < 1.0) grad.mul_(clip);
    const ParamGroup& g = groups_[s.group];
    if (g.algorithm == Algorithm::kAdamW) {
      adamw_step(s.param.tensor, grad, s.adamw, g.adamw);
      continue;
    }
    if (!s.momentum.defined()) s.momentum = at::zeros_like(s.param.tensor, at::MemoryFormat::Contiguous);
    tasks.push_back({s.param.tensor, muon_momentum_direction(grad, s.momentum, g.muon), splits_.find(s.param.name),
                     s.group, &g.muon, s.param.name});
    stepped.push_back(i);
  }
  last_ns_counts_ = apply_muon_tasks(tasks);
  if (debug_checks_enabled()) {
    check_ns_counts(expected_ns_counts(plan_, stepped), last_ns_counts_, groups_, "MuonWithAdamW::step");
  }
  for (size_t i : stepped) ++slots_[i].muon_steps;
}

}  // namespace orthotron
