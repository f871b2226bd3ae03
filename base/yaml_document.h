// yaml_document.h: loading a YAML config file as hostile input: exactly one document, a mapping
// at the top whose keys are a declared set (an unknown or misspelled section names the line and
// the closest valid key), no key repeated in any mapping, bounded size, nesting and node count
// (aliases count at every use, so an alias bomb or a self-referencing alias cannot hang the walk).
// Depends on yaml-cpp, base/yaml_fields.h and base/errors.h.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <string>
#include <vector>

#include "base/yaml_fields.h"

namespace orthotron {

constexpr size_t kMaxYamlBytes = 16u << 20;    ///< a config file larger than 16 MiB is refused
constexpr size_t kMaxYamlDepth = 32;           ///< mappings and lists nested deeper are refused
constexpr size_t kMaxYamlNodes = 1000 * 1000;  ///< nodes visited, aliases counted at every use

/// Parses `text` (named `source` in messages) and checks it as described above. ConfigError
/// "<source>:<line>: <what>" for a syntax error, a second document, a duplicate key, a too deep or
/// too large tree, or a top level that is not a mapping.
YAML::Node load_yaml_text(const std::string& text, const std::string& source);

/// Reads `path` (ConfigError when it is missing, a directory, unreadable or above kMaxYamlBytes)
/// and returns load_yaml_text of its contents.
YAML::Node load_yaml_file(const std::string& path);

/// The top level of a config file as a section whose keys must all be in `sections` (each
/// owner then reads its own child). ConfigError naming the file, line and closest valid key.
YamlSection load_yaml_config(const std::string& path, const std::vector<std::string>& sections);

}  // namespace orthotron
