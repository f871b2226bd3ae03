// muon_with_adamw_state.cpp: the MuonWithAdamW state dict: building it, and validating then
// applying a load.
#include <c10/core/GradMode.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "optim/group_json.h"
#include "optim/muon_with_adamw.h"
#include "optim/safetensors.h"
#include "optim/state_header.h"
#include "parallel/errors.h"

namespace orthotron {

namespace {

constexpr const char* kSections[] = {"muon", "adamw"};

std::string tensor_key(const std::string& section, const std::string& param, const std::string& slot) {
  return section + "/" + param + "/" + slot;
}

std::vector<std::string> slot_names(Algorithm a) {
  if (a == Algorithm::kMuon) return {"momentum"};
  return {"exp_avg", "exp_avg_sq"};
}

}  // namespace

StateDict MuonWithAdamW::state_dict() const {
  StateDict sd;
  nlohmann::json state = {{"muon", {{"groups", nlohmann::json::object()}, {"params", nlohmann::json::object()}}},
                          {"adamw", {{"groups", nlohmann::json::object()}, {"params", nlohmann::json::object()}}}};
  for (const auto& g : groups_) state[state_section(g.algorithm)]["groups"][g.name] = group_to_json(g);
  for (const auto& s : slots_) {
    const ParamGroup& g = groups_[s.group];
    const char* section = state_section(g.algorithm);
    const int64_t steps = g.algorithm == Algorithm::kMuon ? s.muon_steps : s.adamw.step;
    state[section]["params"][s.param.name] = {{"group", g.name},
                                              {"step", steps},
                                              {"shape", s.param.tensor.sizes().vec()},
                                              {"dtype", safetensors_dtype_name(s.param.tensor.scalar_type())}};
    if (g.algorithm == Algorithm::kMuon) {
      if (s.momentum.defined()) sd.tensors[tensor_key(section, s.param.name, "momentum")] = s.momentum;
    } else if (s.adamw.exp_avg.defined()) {
      sd.tensors[tensor_key(section, s.param.name, "exp_avg")] = s.adamw.exp_avg;
      sd.tensors[tensor_key(section, s.param.name, "exp_avg_sq")] = s.adamw.exp_avg_sq;
    }
  }
  write_state_header(sd, state);
  return sd;
}

LoadReport MuonWithAdamW::load_state_dict(const StateDict& sd, const LoadOptions& options) {
  LoadReport report;
  auto problem = [&](const std::string& what) {
    if (!options.allow_partial) throw StateDictError("load_state_dict: " + what + " (pass allow_partial to skip it)");
    report.skipped.push_back(what);
  };

  // 1. Identity of the file: format, version and optimizer kind are never skipped.
  const nlohmann::json state = read_state_header(sd);

  // 2. Plan every change without touching this object.
  struct Pending {
    size_t slot;
    int64_t steps;
    std::vector<at::Tensor> tensors;  // in slot_names order; empty when the checkpoint had no state yet
  };
  std::vector<Pending> pending;
  std::vector<ParamGroup> new_groups = groups_;
  std::set<std::string> used_tensors;
  std::set<std::string> present_sections;
  for (const char* section : kSections) {
    if (!state.contains(section) || !state[section].is_object()) {
      problem(std::string("the '") + section + "' section is missing from the state dict");
      continue;
    }
    present_sections.insert(section);
    const auto& sec = state[section];
    restore_groups(sec, section, new_groups, problem);
    if (!sec.contains("params") || !sec["params"].is_object()) {
      throw StateDictError(std::string("load_state_dict: the '") + section + "' section has no 'params' object");
    }
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    const ParamGroup& g = groups_[s.group];
    const std::string section = state_section(g.algorithm);
    if (present_sections.count(section) == 0) continue;  // already reported with the section
    const auto& params = state[section]["params"];
    if (!params.contains(s.param.name)) {
      const std::string other = g.algorithm == Algorithm::kMuon ? "adamw" : "muon";
      if (state.contains(other) && state[other].contains("params") && state[other]["params"].contains(s.param.name)) {
        problem("parameter '" + s.param.name + "' was optimized by " + other + " in the state dict but is routed to " +
                section + " here");
        continue;
      }
      problem("parameter '" + s.param.name + "' is missing from the '" + section + "' section");
      continue;
    }
    const auto& entry = params[s.param.name];
    Pending p{i, 0, {}};
    try {
      p.steps = entry.at("step").get<int64_t>();
      const auto shape = entry.at("shape").get<std::vector<int64_t>>();
      if (!s.param.tensor.sizes().equals(shape)) {
        problem("parameter '" + s.param.name + "' has shape " + c10::str(c10::IntArrayRef(shape)) +
                " in the state dict, " + c10::str(s.param.tensor.sizes()) + " here");
        continue;
      }
      const std::string dtype = entry.at("dtype").get<std::string>();
      if (dtype != safetensors_dtype_name(s.param.tensor.scalar_type())) {
        problem("parameter '" + s.param.name + "' has dtype " + dtype + " in the state dict, " +
                safetensors_dtype_name(s.param.tensor.scalar_type()) + " here");
        continue;
      }
    } catch (const nlohmann::json::exception& e) {
      throw StateDictError("load_state_dict: entry of parameter '" + s.param.name + "' is malformed: " + e.what());
    }
    bool ok = true;
    for (const auto& slot_name : slot_names(g.algorithm)) {
      const std::string key = tensor_key(section, s.param.name, slot_name);
      auto t = sd.tensors.find(key);
      if (t == sd.tensors.end()) {
        if (p.steps > 0) {
          problem("tensor '" + key + "' is missing (parameter '" + s.param.name + "' has taken " +
                  std::to_string(p.steps) + " steps)");
          ok = false;
        }
        continue;
      }
      used_tensors.insert(key);
      if (!t->second.sizes().equals(s.param.tensor.sizes()) ||
          t->second.scalar_type() != s.param.tensor.scalar_type()) {
        problem("tensor '" + key + "' is " + c10::toString(t->second.scalar_type()) + c10::str(t->second.sizes()) +
                ", expected " + c10::toString(s.param.tensor.scalar_type()) + c10::str(s.param.tensor.sizes()));
        ok = false;
        continue;
      }
      p.tensors.push_back(t->second);
    }
    if (!ok) continue;
    if (!p.tensors.empty() && p.tensors.size() != slot_names(g.algorithm).size()) {
      problem("parameter '" + s.param.name + "' has only part of its state tensors");
      continue;
    }
    pending.push_back(std::move(p));
  }
  for (const auto& section : present_sections) {
    const auto& params = state[section]["params"];
    for (auto it = params.begin(); it != params.end(); ++it) {
      if (index_.count(it.key()) == 0)
        problem("unexpected parameter '" + it.key() + "' in the '" + section + "' section");
    }
  }
  for (const auto& [key, tensor] : sd.tensors) {
    if (used_tensors.count(key) == 0) problem("unexpected tensor '" + key + "' in the state dict");
  }

  // 3. Apply.
  c10::NoGradGuard no_grad;
  groups_ = std::move(new_groups);
  for (auto& p : pending) {
    Slot& s = slots_[p.slot];
    const auto& device = s.param.tensor.device();
    if (groups_[s.group].algorithm == Algorithm::kMuon) {
      s.muon_steps = p.steps;
      s.momentum = p.tensors.empty() ? at::Tensor() : p.tensors[0].to(device, /*non_blocking=*/false, /*copy=*/true);
    } else {
      s.adamw.step = p.steps;
      s.adamw.exp_avg = p.tensors.empty() ? at::Tensor() : p.tensors[0].to(device, false, true);
      s.adamw.exp_avg_sq = p.tensors.empty() ? at::Tensor() : p.tensors[1].to(device, false, true);
    }
  }
  return report;
}

}  // namespace orthotron
