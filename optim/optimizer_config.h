// optimizer_config.h: the YAML `optimizer` section (groups with full hyperparameters, ordered
// routing rules), strictly validated, and the MuonWithAdamW it builds. See configs/optimizer.yaml.
#pragma once

#include <yaml-cpp/yaml.h>

#include <memory>
#include <string>
#include <vector>

#include "base/yaml_fields.h"
#include "optim/muon_with_adamw.h"

namespace orthotron {

struct OptimizerConfig {
  std::vector<ParamGroup> groups;  ///< default_groups() when the section has no `groups`
  std::vector<RoutingRule> rules;  ///< default_routing_rules() when the section has no `rules`
};

/// Parses an `optimizer` mapping. Throws ConfigError (file:line, dotted key, expected vs got,
/// closest valid key for typos) for any unknown key, wrong type, out-of-range value, empty rule
/// list, or rule naming an undefined group.
OptimizerConfig parse_optimizer_config(const YamlSection& section);

/// Reads `path` and parses its top-level `optimizer` key (the file may hold other sections,
/// which are left to their owners). ConfigError when the file cannot be read or parsed.
OptimizerConfig load_optimizer_config(const std::string& path);

/// The fully resolved configuration as YAML (every default written out), for logs and checkpoints.
std::string optimizer_config_to_yaml(const OptimizerConfig& config);

/// Builds the container for `params`: MuonWithAdamW(params, config.groups, config.rules).
std::unique_ptr<MuonWithAdamW> make_muon_with_adamw(NamedParameters params, const OptimizerConfig& config);

}  // namespace orthotron
