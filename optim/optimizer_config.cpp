// optimizer_config.cpp: YAML -> OptimizerConfig with strict validation, and back.
#include "optim/optimizer_config.h"

#include <algorithm>
#include <climits>
#include <limits>
#include <sstream>

#include "parallel/errors.h"

namespace orthotron {

namespace {

const std::vector<std::string> kSectionKeys = {"groups", "rules"};
const std::vector<std::string> kMuonKeys = {
    "algorithm",    "lr",          "momentum",        "nesterov", "momentum_form", "scale_mode", "spectral_factor",
    "weight_decay", "ns_schedule", "ns_coefficients", "ns_steps", "ns_eps",        "ns_dtype"};
const std::vector<std::string> kAdamWKeys = {"algorithm", "lr", "betas", "eps", "weight_decay"};
const std::vector<std::string> kRuleKeys = {"name", "match", "min_dim", "max_dim", "group", "must_match"};
constexpr double kInf = std::numeric_limits<double>::infinity();

MuonOptions parse_muon(const YamlSection& s) {
  s.check_keys(kMuonKeys);
  MuonOptions m;
  m.lr = s.get_double("lr", m.lr, 0, kInf, false, true);
  m.momentum = s.get_double("momentum", m.momentum, 0, 1, false, true);
  m.nesterov = s.get_bool("nesterov", m.nesterov);
  m.momentum_form = parse_momentum_form(s.get_string("momentum_form", "ema", {"ema", "sum"}));
  m.scale_mode = parse_scale_mode(s.get_string("scale_mode", "original", {"original", "match_rms_adamw", "spectral"}));
  m.spectral_factor = s.get_double("spectral_factor", m.spectral_factor, 0, kInf, true, true);
  m.weight_decay = s.get_double("weight_decay", m.weight_decay, 0, kInf, false, true);
  std::vector<std::string> schedules = ns_schedule_names();
  schedules.push_back("custom");
  const std::string schedule = s.get_string("ns_schedule", "quintic", schedules);
  if (schedule == "custom") {
    if (!s.has("ns_coefficients")) {
      throw ConfigError(s.where("ns_schedule") + ": " + s.key_path("ns_schedule") + " is 'custom' but " +
                        s.key_path("ns_coefficients") + " is not given");
    }
    const YAML::Node list = s.node()["ns_coefficients"];
    if (!list.IsSequence() || list.size() == 0) {
      throw ConfigError(s.where("ns_coefficients") + ": " + s.key_path("ns_coefficients") +
                        " must be a non-empty list of [a, b, c] triples");
    }
    std::vector<NsCoefficients> coeffs;
    for (size_t i = 0; i < list.size(); ++i) {
      const auto v =
          yaml_number_list(list[i], s.file(), s.key_path("ns_coefficients") + "[" + std::to_string(i) + "]", 3);
      coeffs.push_back({v[0], v[1], v[2]});
    }
    m.ns.schedule = ns_custom_schedule(std::move(coeffs));
  } else {
    if (s.has("ns_coefficients")) {
      throw ConfigError(s.where("ns_coefficients") + ": " + s.key_path("ns_coefficients") +
                        " is only read when ns_schedule is 'custom' (ns_schedule is '" + schedule + "')");
    }
    m.ns.schedule = ns_schedule_by_name(schedule);
  }
  m.ns.schedule.eps = s.get_double("ns_eps", m.ns.schedule.eps, 0, 1, true, false);
  m.ns.steps = s.get_int("ns_steps", m.ns.steps, 1, 100);
  m.ns.compute_dtype =
      parse_ns_dtype(s.get_string("ns_dtype", "float32", {"float32", "float64", "bfloat16", "float16"}));
  m.validate();
  return m;
}

AdamWOptions parse_adamw(const YamlSection& s) {
  s.check_keys(kAdamWKeys);
  AdamWOptions a;
  a.lr = s.get_double("lr", a.lr, 0, kInf, false, true);
  if (s.has("betas")) {
    const auto betas = s.get_double_list("betas", 2);
    for (size_t i = 0; i < 2; ++i) {
      if (!(betas[i] >= 0 && betas[i] < 1)) {
        throw ConfigError(s.where("betas") + ": " + s.key_path("betas") + "[" + std::to_string(i) +
                          "] must be in [0, 1), got " + std::to_string(betas[i]));
      }
    }
    a.beta1 = betas[0];
    a.beta2 = betas[1];
  }
  a.eps = s.get_double("eps", a.eps, 0, kInf, true, true);
  a.weight_decay = s.get_double("weight_decay", a.weight_decay, 0, kInf, false, true);
  a.validate();
  return a;
}

RoutingRule parse_rule(const YamlSection& s, size_t index, const std::vector<ParamGroup>& groups) {
  s.check_keys(kRuleKeys);
  RoutingRule r;
  r.name = s.get_string("name", "rule " + std::to_string(index));
  r.patterns = s.get_string_list("match");
  r.min_dim = s.get_int("min_dim", 0, 0, 64);
  r.max_dim = s.get_int("max_dim", INT_MAX, 0, INT_MAX);
  if (r.max_dim < r.min_dim) {
    throw ConfigError(s.where("max_dim") + ": " + s.key_path("max_dim") + " (" + std::to_string(r.max_dim) +
                      ") is below min_dim (" + std::to_string(r.min_dim) + ")");
  }
  if (!s.has("group")) throw ConfigError(s.where() + ": " + s.path() + " needs a 'group'");
  r.group = s.get_string("group", "");
  const bool known = std::any_of(groups.begin(), groups.end(), [&](const ParamGroup& g) { return g.name == r.group; });
  if (!known) {
    std::string names;
    for (const auto& g : groups) names += " " + g.name;
    throw ConfigError(s.where("group") + ": " + s.key_path("group") + " of rule '" + r.name + "' names group '" +
                      r.group + "', which is not defined (defined:" + names + ")");
  }
  r.must_match = s.get_bool("must_match", true);
  r.origin = s.where();
  return r;
}

}  // namespace

OptimizerConfig parse_optimizer_config(const YamlSection& section) {
  section.check_keys(kSectionKeys);
  OptimizerConfig config;
  if (section.has("groups")) {
    const YamlSection groups = section.child("groups");
    if (!groups.node().IsMap() || groups.node().size() == 0) {
      throw ConfigError(groups.where() + ": " + groups.path() +
                        " must be a non-empty mapping of group name to settings");
    }
    for (auto it = groups.node().begin(); it != groups.node().end(); ++it) {
      const std::string name = it->first.Scalar();
      const YamlSection g = groups.child(name);
      if (!g.node().IsMap()) throw ConfigError(groups.where(name) + ": " + g.path() + " must be a mapping of settings");
      ParamGroup group;
      group.name = name;
      const std::string fallback = name == "adamw" ? "adamw" : (name == "muon" ? "muon" : "");
      if (fallback.empty() && !g.has("algorithm")) {
        throw ConfigError(groups.where(name) + ": " + g.path() + " needs 'algorithm: muon' or 'algorithm: adamw'");
      }
      group.algorithm = parse_algorithm(g.get_string("algorithm", fallback, {"muon", "adamw"}));
      try {
        if (group.algorithm == Algorithm::kMuon) {
          group.muon = parse_muon(g);
        } else {
          group.adamw = parse_adamw(g);
        }
      } catch (const InvalidArgument& e) {
        throw ConfigError(g.where() + ": " + g.path() + ": " + e.what());
      }
      config.groups.push_back(group);
    }
  } else {
    config.groups = default_groups();
  }
  if (section.node().IsMap() && section.node()["rules"].IsDefined() && section.node()["rules"].IsNull()) {
    throw ConfigError(section.where("rules") + ": " + section.key_path("rules") +
                      " is present but empty; list at least one rule, or omit the key to use the default rules");
  }
  if (section.has("rules")) {
    const YamlSection rules = section.child("rules");
    if (!rules.node().IsSequence() || rules.node().size() == 0) {
      throw ConfigError(rules.where() + ": " + rules.path() +
                        " must be a non-empty list of rules (omit it to use the default rules)");
    }
    for (size_t i = 0; i < rules.node().size(); ++i) {
      YAML::Node holder = rules.node()[i];
      config.rules.push_back(parse_rule(
          YamlSection(holder, section.file(), rules.path() + "[" + std::to_string(i) + "]"), i, config.groups));
    }
  } else {
    config.rules = default_routing_rules();
  }
  return config;
}

OptimizerConfig load_optimizer_config(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw ConfigError("cannot read config file '" + path + "'");
  } catch (const YAML::Exception& e) {
    throw ConfigError(path + ":" + std::to_string(e.mark.line + 1) + ": YAML syntax error: " + e.msg);
  }
  if (!root.IsMap() || !root["optimizer"].IsDefined()) {
    throw ConfigError(path + ": no top-level 'optimizer' section");
  }
  return parse_optimizer_config(YamlSection(root["optimizer"], path, "optimizer"));
}

std::string optimizer_config_to_yaml(const OptimizerConfig& config) {
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "optimizer" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "groups" << YAML::Value << YAML::BeginMap;
  for (const auto& g : config.groups) {
    out << YAML::Key << g.name << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "algorithm" << YAML::Value << to_string(g.algorithm);
    if (g.algorithm == Algorithm::kMuon) {
      const MuonOptions& m = g.muon;
      out << YAML::Key << "lr" << YAML::Value << m.lr << YAML::Key << "momentum" << YAML::Value << m.momentum
          << YAML::Key << "nesterov" << YAML::Value << m.nesterov << YAML::Key << "momentum_form" << YAML::Value
          << to_string(m.momentum_form) << YAML::Key << "scale_mode" << YAML::Value << to_string(m.scale_mode)
          << YAML::Key << "spectral_factor" << YAML::Value << m.spectral_factor << YAML::Key << "weight_decay"
          << YAML::Value << m.weight_decay << YAML::Key << "ns_schedule" << YAML::Value << m.ns.schedule.name;
      if (m.ns.schedule.name == "custom") {
        out << YAML::Key << "ns_coefficients" << YAML::Value << YAML::Flow << YAML::BeginSeq;
        for (const auto& c : m.ns.schedule.coefficients) out << YAML::Flow << std::vector<double>(c.begin(), c.end());
        out << YAML::EndSeq;
      }
      out << YAML::Key << "ns_steps" << YAML::Value << m.ns.steps << YAML::Key << "ns_eps" << YAML::Value
          << m.ns.schedule.eps << YAML::Key << "ns_dtype" << YAML::Value << ns_dtype_name(m.ns.compute_dtype);
    } else {
      const AdamWOptions& a = g.adamw;
      out << YAML::Key << "lr" << YAML::Value << a.lr << YAML::Key << "betas" << YAML::Value << YAML::Flow
          << std::vector<double>{a.beta1, a.beta2} << YAML::Key << "eps" << YAML::Value << a.eps << YAML::Key
          << "weight_decay" << YAML::Value << a.weight_decay;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap << YAML::Key << "rules" << YAML::Value << YAML::BeginSeq;
  for (const auto& r : config.rules) {
    out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << r.name;
    if (!r.patterns.empty()) out << YAML::Key << "match" << YAML::Value << YAML::Flow << r.patterns;
    if (r.min_dim != 0) out << YAML::Key << "min_dim" << YAML::Value << r.min_dim;
    if (r.max_dim != INT_MAX) out << YAML::Key << "max_dim" << YAML::Value << r.max_dim;
    if (!r.must_match) out << YAML::Key << "must_match" << YAML::Value << false;
    out << YAML::Key << "group" << YAML::Value << r.group << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap << YAML::EndMap;
  return out.c_str();
}

std::unique_ptr<MuonWithAdamW> make_muon_with_adamw(NamedParameters params, const OptimizerConfig& config) {
  return std::make_unique<MuonWithAdamW>(std::move(params), config.groups, config.rules);
}

}  // namespace orthotron
