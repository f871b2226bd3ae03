// yaml_fields.h: strict, typed reading of YAML mappings for every config section (optimizer,
// engine): unknown keys with a closest-key suggestion, wrong types and out-of-range values, each a
// ConfigError naming the file, line, dotted key, and the expected versus actual value.
#pragma once

#include <yaml-cpp/yaml.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace orthotron {

/// Where values that did not come from the file came from: dotted key path -> a label such as
/// "--set training.train_iters=10" (see base/yaml_overrides.h). Messages about those keys name the
/// label instead of a file line.
using YamlOrigins = std::map<std::string, std::string>;

/// A mapping node plus where it sits: the file it came from and its dotted key path ("optimizer.groups.muon").
class YamlSection {
 public:
  YamlSection(YAML::Node node, std::string file, std::string path,
              std::shared_ptr<const YamlOrigins> origins = nullptr);

  /// Throws ConfigError unless the node is a mapping whose keys are all in `allowed`; the message
  /// names the file:line, the key, the closest allowed key, and the full list.
  void check_keys(const std::vector<std::string>& allowed) const;

  bool has(const std::string& key) const;
  const YAML::Node& node() const { return node_; }
  const std::string& file() const { return file_; }
  const std::string& path() const { return path_; }
  /// "file:line" of the key (or of this section when the key is absent); the override's label
  /// when the key was set on the command line.
  std::string where(const std::string& key = "") const;
  std::string key_path(const std::string& key) const;
  YamlSection child(const std::string& key) const;

  /// Typed getters: absent key -> `fallback`; wrong type or out of range -> ConfigError. (Option
  /// structs read their fields through base/field_table.h instead.)
  int get_int(const std::string& key, int fallback, int min, int max) const;
  bool get_bool(const std::string& key, bool fallback) const;
  /// A string that must be one of `choices` (empty: any string).
  std::string get_string(const std::string& key, const std::string& fallback,
                         const std::vector<std::string>& choices = {}) const;
  /// A scalar or a list of scalars, as strings.
  std::vector<std::string> get_string_list(const std::string& key) const;

 private:
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;
  YAML::Node node_;
  std::string file_;
  std::string path_;
  std::shared_ptr<const YamlOrigins> origins_;
};

/// A YAML list of exactly `size` finite numbers (size 0: any length) at `path`, with `node`'s own
/// file:line in the ConfigError.
std::vector<double> yaml_number_list(const YAML::Node& node, const std::string& file, const std::string& path,
                                     size_t size);

/// Levenshtein-closest candidate to `word`, or "" when none is within a plausible distance.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace orthotron
