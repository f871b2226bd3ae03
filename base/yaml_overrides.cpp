// yaml_overrides.cpp: dotted-key overrides merged into a YAML tree.
#include "base/yaml_overrides.h"

#include "base/errors.h"
#include "base/yaml_document.h"

namespace orthotron {

YamlOverride parse_yaml_override(const std::string& text) {
  const std::string label = "--set " + text;
  const size_t eq = text.find('=');
  if (eq == std::string::npos)
    throw ConfigError(label + ": expected KEY=VALUE with a dotted KEY (e.g. training.train_iters=10)");
  YamlOverride out;
  out.text = text;
  const std::string key = text.substr(0, eq);
  size_t start = 0;
  while (true) {
    const size_t dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) throw ConfigError(label + ": empty part in the dotted key '" + key + "'");
    out.path.push_back(part);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  const std::string value = text.substr(eq + 1);
  try {
    // A one-entry document, so the value passes the same hostile-input checks as a config file.
    const YAML::Node doc = load_yaml_text("v: " + value, label);
    out.value = doc["v"];
  } catch (const ConfigError& e) {
    throw ConfigError(label + ": the value is not valid YAML (" + e.what() + ")");
  }
  if (!out.value.IsDefined() || out.value.IsNull()) throw ConfigError(label + ": the value is empty");
  return out;
}

std::shared_ptr<const YamlOrigins> apply_yaml_overrides(YAML::Node& root, const std::vector<std::string>& overrides) {
  auto origins = std::make_shared<YamlOrigins>();
  for (const auto& text : overrides) {
    const YamlOverride o = parse_yaml_override(text);
    const std::string label = "--set " + o.text;
    YAML::Node cur;
    cur.reset(root);
    std::string dotted;
    for (size_t i = 0; i < o.path.size(); ++i) {
      dotted += (i ? "." : "") + o.path[i];
      if (!cur.IsMap()) {
        throw ConfigError(label + ": '" + dotted.substr(0, dotted.rfind('.')) + "' holds a value, not a mapping");
      }
      const bool last = i + 1 == o.path.size();
      if (last) {
        cur[o.path[i]] = o.value;
        (*origins)[dotted] = label;
        break;
      }
      if (!cur[o.path[i]] || cur[o.path[i]].IsNull()) {
        cur[o.path[i]] = YAML::Node(YAML::NodeType::Map);
        (*origins)[dotted] = label;  // created by the override: an unknown section names it
      }
      YAML::Node next = cur[o.path[i]];
      cur.reset(next);
    }
  }
  return origins;
}

}  // namespace orthotron
