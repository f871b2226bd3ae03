// group_json.cpp: ParamGroup <-> JSON.
#include "optim/group_json.h"

#include <algorithm>

#include "parallel/errors.h"

namespace orthotron {

nlohmann::json group_to_json(const ParamGroup& g) {
  nlohmann::json j = {{"name", g.name}, {"algorithm", to_string(g.algorithm)}};
  if (g.algorithm == Algorithm::kMuon) {
    const MuonOptions& m = g.muon;
    j["lr"] = m.lr;
    j["momentum"] = m.momentum;
    j["nesterov"] = m.nesterov;
    j["momentum_form"] = to_string(m.momentum_form);
    j["scale_mode"] = to_string(m.scale_mode);
    j["spectral_factor"] = m.spectral_factor;
    j["weight_decay"] = m.weight_decay;
    j["ns_schedule"] = m.ns.schedule.name;
    j["ns_coefficients"] = m.ns.schedule.coefficients;
    j["ns_norm_scale"] = m.ns.schedule.norm_scale;
    j["ns_eps"] = m.ns.schedule.eps;
    j["ns_steps"] = m.ns.steps;
    j["ns_dtype"] = ns_dtype_name(m.ns.compute_dtype);
  } else {
    const AdamWOptions& a = g.adamw;
    j["lr"] = a.lr;
    j["betas"] = {a.beta1, a.beta2};
    j["eps"] = a.eps;
    j["weight_decay"] = a.weight_decay;
  }
  return j;
}

ParamGroup group_from_json(const nlohmann::json& j) {
  ParamGroup g;
  try {
    g.name = j.at("name").get<std::string>();
    g.algorithm = parse_algorithm(j.at("algorithm").get<std::string>());
    if (g.algorithm == Algorithm::kMuon) {
      MuonOptions& m = g.muon;
      m.lr = j.at("lr").get<double>();
      m.momentum = j.at("momentum").get<double>();
      m.nesterov = j.at("nesterov").get<bool>();
      m.momentum_form = parse_momentum_form(j.at("momentum_form").get<std::string>());
      m.scale_mode = parse_scale_mode(j.at("scale_mode").get<std::string>());
      m.spectral_factor = j.at("spectral_factor").get<double>();
      m.weight_decay = j.at("weight_decay").get<double>();
      m.ns.schedule.name = j.at("ns_schedule").get<std::string>();
      m.ns.schedule.coefficients = j.at("ns_coefficients").get<std::vector<NsCoefficients>>();
      m.ns.schedule.norm_scale = j.at("ns_norm_scale").get<double>();
      m.ns.schedule.eps = j.at("ns_eps").get<double>();
      m.ns.steps = j.at("ns_steps").get<int>();
      m.ns.compute_dtype = parse_ns_dtype(j.at("ns_dtype").get<std::string>());
      m.validate();
    } else {
      AdamWOptions& a = g.adamw;
      a.lr = j.at("lr").get<double>();
      const auto betas = j.at("betas").get<std::vector<double>>();
      if (betas.size() != 2) throw InvalidArgument("betas must hold 2 values");
      a.beta1 = betas[0];
      a.beta2 = betas[1];
      a.eps = j.at("eps").get<double>();
      a.weight_decay = j.at("weight_decay").get<double>();
      a.validate();
    }
  } catch (const nlohmann::json::exception& e) {
    throw StateDictError("group '" + g.name +
                         "' in the state dict has a missing or malformed hyperparameter: " + e.what());
  } catch (const InvalidArgument& e) {
    throw StateDictError("group '" + g.name + "' in the state dict: " + e.what());
  }
  return g;
}

const char* state_section(Algorithm a) {
  return a == Algorithm::kMuon ? "muon" : "adamw";
}

void restore_groups(const nlohmann::json& sec, const std::string& section, std::vector<ParamGroup>& groups,
                    const std::function<void(const std::string&)>& problem) {
  for (auto& g : groups) {
    if (state_section(g.algorithm) != section) continue;
    if (!sec.contains("groups") || !sec["groups"].contains(g.name)) {
      problem("group '" + g.name + "' is missing from the '" + section + "' section");
      continue;
    }
    const ParamGroup loaded = group_from_json(sec["groups"][g.name]);
    if (loaded.algorithm != g.algorithm) {
      throw StateDictError("load_state_dict: group '" + g.name + "' is " + to_string(loaded.algorithm) +
                           " in the state dict but " + to_string(g.algorithm) + " here");
    }
    g = loaded;
  }
  if (!sec.contains("groups")) return;
  for (auto it = sec["groups"].begin(); it != sec["groups"].end(); ++it) {
    const bool known = std::any_of(groups.begin(), groups.end(), [&](const ParamGroup& g) {
      return g.name == it.key() && state_section(g.algorithm) == section;
    });
    if (!known) problem("unexpected group '" + it.key() + "' in the '" + section + "' section");
  }
}

}  // namespace orthotron
