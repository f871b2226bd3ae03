// muon_with_adamw_state.cpp: the MuonWithAdamW state dict, through the shared optimizer-state path.
#include <c10/core/GradMode.h>

#include "optim/muon_with_adamw.h"
#include "optim/optimizer_state.h"

namespace orthotron {

StateDict MuonWithAdamW::state_dict() const {
  std::vector<StateEntry> entries;
  for (const auto& s : slots_) {
    const ParamGroup& g = groups_[s.group];
    StateEntry e;
    e.name = s.param.name;
    e.algorithm = g.algorithm;
    e.group = g.name;
    e.shape = s.param.tensor.sizes().vec();
    e.dtype = s.param.tensor.scalar_type();
    if (g.algorithm == Algorithm::kMuon) {
      e.step = s.muon_steps;
      if (s.momentum.defined()) e.tensors = {s.momentum};
    } else {
      e.step = s.adamw.step;
      if (s.adamw.exp_avg.defined()) e.tensors = {s.adamw.exp_avg, s.adamw.exp_avg_sq};
    }
    entries.push_back(std::move(e));
  }
  return encode_optimizer_state(groups_, entries);
}

LoadReport MuonWithAdamW::load_state_dict(const StateDict& sd, const LoadOptions& options) {
  std::vector<ExpectedParam> expected;
  for (const auto& s : slots_) {
    const ParamGroup& g = groups_[s.group];
    expected.push_back(
        {s.param.name, g.algorithm, g.name, s.param.tensor.sizes().vec(), s.param.tensor.scalar_type(), std::nullopt});
  }
  DecodedState decoded = decode_optimizer_state(sd, groups_, expected, /*expect_layout=*/false, options);

  c10::NoGradGuard no_grad;
  for (auto& d : decoded.params) {
    Slot& s = slots_[d.expected];
    const auto& device = s.param.tensor.device();
    auto restore = [&](size_t k) {
      return d.tensors.empty() ? at::Tensor() : d.tensors[k].to(device, /*non_blocking=*/false, /*copy=*/true);
    };
    if (groups_[s.group].algorithm == Algorithm::kMuon) {
      s.muon_steps = d.step;
      s.momentum = restore(0);
    } else {
      s.adamw.step = d.step;
      if (d.tensors.empty()) {
        s.adamw.exp_avg = at::Tensor();
        s.adamw.exp_avg_sq = at::Tensor();
      } else {
        adamw_restore_moments(s.param.tensor, d.tensors[0], d.tensors[1], s.adamw);
      }
    }
  }
  return decoded.report;
}

}  // namespace orthotron
