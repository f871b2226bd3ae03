// yaml_overrides.h: command-line overrides of a loaded YAML config with dotted keys
// (`--set training.lr_schedule.warmup=100`). The override is merged into the tree before the
// section owners parse it, so it is validated by exactly the same field tables as the file; its
// messages name the override instead of a file line (YamlOrigins).
#pragma once

#include <yaml-cpp/yaml.h>

#include <memory>
#include <string>
#include <vector>

#include "base/yaml_fields.h"

namespace orthotron {

/// One parsed `KEY=VALUE`: the dotted path split at '.', and the value as YAML (a scalar, or a flow
/// list such as `[0.9, 0.95]`). ConfigError naming the override when it has no '=', an empty key
/// part, or a value that is not valid YAML.
struct YamlOverride {
  std::string text;               ///< as given, for messages
  std::vector<std::string> path;  ///< "training", "lr_schedule", "warmup"
  YAML::Node value;
};
YamlOverride parse_yaml_override(const std::string& text);

/// Sets every override in `root` (a mapping), creating the mappings on its path. ConfigError when a
/// path goes through a key that holds a scalar or a list. Returns the origins: every dotted path an
/// override set or created, labelled "--set KEY=VALUE", for YamlSection's messages. Later overrides
/// win over earlier ones and over the file.
std::shared_ptr<const YamlOrigins> apply_yaml_overrides(YAML::Node& root, const std::vector<std::string>& overrides);

}  // namespace orthotron
