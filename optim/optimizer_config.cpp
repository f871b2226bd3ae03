// optimizer_config.cpp: YAML -> OptimizerConfig with strict validation, and back.
#include "optim/optimizer_config.h"

#include <algorithm>
#include <climits>
#include <limits>
#include <sstream>

#include "base/errors.h"
#include "base/yaml_document.h"
#include "optim/option_fields.h"

namespace orthotron {

namespace {

const std::vector<std::string> kSectionKeys = {"groups", "rules"};
const std::vector<std::string> kRuleKeys = {"name", "match", "min_dim", "max_dim", "group", "must_match"};

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
      group.algorithm = parse_algorithm(g.get_string("algorithm", fallback, algorithm_names().names()));
      if (group.algorithm == Algorithm::kMuon) {
        group.muon = muon_option_fields().parse_yaml(g, MuonOptions{}, {"algorithm"});
      } else {
        group.adamw = adamw_option_fields().parse_yaml(g, AdamWOptions{}, {"algorithm"});
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
  const YamlSection root = load_yaml_config(path, {"optimizer"});
  if (!root.has("optimizer")) throw ConfigError(path + ": no top-level 'optimizer' section");
  return parse_optimizer_config(root.child("optimizer"));
}

std::string optimizer_config_to_yaml(const OptimizerConfig& config) {
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "optimizer" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "groups" << YAML::Value << YAML::BeginMap;
  for (const auto& g : config.groups) {
    out << YAML::Key << g.name << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "algorithm" << YAML::Value << to_string(g.algorithm);
    if (g.algorithm == Algorithm::kMuon) {
      muon_option_fields().emit_yaml(out, g.muon);
    } else {
      adamw_option_fields().emit_yaml(out, g.adamw);
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
