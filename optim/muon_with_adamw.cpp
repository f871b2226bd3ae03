// muon_with_adamw.cpp: routing and the step of the MuonWithAdamW container.
#include "optim/muon_with_adamw.h"

#include <c10/core/GradMode.h>

#include <tuple>

#include "optim/errors.h"

namespace orthotron {

MuonWithAdamW::MuonWithAdamW(NamedParameters params, std::vector<ParamGroup> groups, std::vector<RoutingRule> rules)
    : groups_(std::move(groups)) {
  for (const auto& g : groups_) {
    try {
      if (g.algorithm == Algorithm::kMuon) {
        g.muon.validate();
      } else {
        g.adamw.validate();
      }
    } catch (const InvalidArgument& e) {
      throw InvalidArgument("group '" + g.name + "': " + e.what());
    }
  }
  assignment_ = route_parameters(params, groups_, rules);
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

const at::Tensor& MuonWithAdamW::muon_momentum(const std::string& param) const { return slot(param).momentum; }
const AdamWState& MuonWithAdamW::adamw_state(const std::string& param) const { return slot(param).adamw; }
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
  // Muon: gather each matrix's Nesterov direction into buckets of (group, m, n) so that same-shape
  // matrices share one batched Newton-Schulz call; order of first appearance keeps it deterministic.
  struct Bucket {
    size_t group;
    std::vector<size_t> slots;
    std::vector<at::Tensor> directions;  // [k_i, m, n] views
  };
  std::vector<Bucket> buckets;
  std::map<std::tuple<size_t, int64_t, int64_t>, size_t> bucket_of;
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    const at::Tensor grad = s.param.tensor.grad();
    if (!grad.defined()) continue;
    if (!grad.sizes().equals(s.param.tensor.sizes())) {
      throw ShapeError("parameter '" + s.param.name + "': gradient shape " + c10::str(grad.sizes()) +
                       " differs from parameter shape " + c10::str(s.param.tensor.sizes()));
    }
    const ParamGroup& g = groups_[s.group];
    if (g.algorithm == Algorithm::kAdamW) {
      adamw_step(s.param.tensor, grad, s.adamw, g.adamw);
      continue;
    }
    if (!s.momentum.defined()) s.momentum = at::zeros_like(s.param.tensor, at::MemoryFormat::Contiguous);
    at::Tensor u = muon_matrix_view(muon_momentum_direction(grad, s.momentum, g.muon), s.param.name);
    const auto key = std::make_tuple(s.group, u.size(1), u.size(2));
    auto it = bucket_of.find(key);
    if (it == bucket_of.end()) {
      it = bucket_of.emplace(key, buckets.size()).first;
      buckets.push_back({s.group, {}, {}});
    }
    buckets[it->second].slots.push_back(i);
    buckets[it->second].directions.push_back(u);
  }
  for (auto& b : buckets) {
    const MuonOptions& opts = groups_[b.group].muon;
    const at::Tensor ortho = newton_schulz(at::cat(b.directions, 0), opts.ns);
    int64_t row = 0;
    for (size_t j = 0; j < b.slots.size(); ++j) {
      Slot& s = slots_[b.slots[j]];
      const int64_t k = b.directions[j].size(0);
      muon_apply_update(s.param.tensor, ortho.narrow(0, row, k), opts, s.param.name);
      row += k;
      ++s.muon_steps;
    }
  }
}

}  // namespace orthotron
