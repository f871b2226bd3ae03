// yaml_fields.cpp: strict typed YAML field access with file:line error messages.
#include "base/yaml_fields.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "base/errors.h"

namespace orthotron {

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    std::vector<size_t> prev(c.size() + 1), cur(c.size() + 1);
    for (size_t j = 0; j <= c.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= word.size(); ++i) {
      cur[0] = i;
      for (size_t j = 1; j <= c.size(); ++j) {
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (word[i - 1] == c[j - 1] ? 0 : 1)});
      }
      std::swap(prev, cur);
    }
    if (prev[c.size()] < best_d) {
      best_d = prev[c.size()];
      best = c;
    }
  }
  // Suggest only when at most about a third of the word differs.
  return best_d <= std::max<size_t>(2, word.size() / 3) ? best : "";
}

YamlSection::YamlSection(YAML::Node node, std::string file, std::string path,
                         std::shared_ptr<const YamlOrigins> origins)
    : node_(std::move(node)), file_(std::move(file)), path_(std::move(path)), origins_(std::move(origins)) {}

std::string YamlSection::key_path(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

std::string YamlSection::where(const std::string& key) const {
  if (origins_) {
    const auto it = origins_->find(key.empty() ? path_ : key_path(key));
    if (it != origins_->end()) return it->second;
  }
  YAML::Mark mark = node_.Mark();
  if (!key.empty() && node_.IsMap()) {
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      if (it->first.Scalar() == key) mark = it->first.Mark();
    }
  }
  std::ostringstream out;
  out << file_;
  if (mark.line >= 0) out << ":" << mark.line + 1;
  return out.str();
}

void YamlSection::fail(const std::string& key, const std::string& what) const {
  throw ConfigError(where(key) + ": " + key_path(key) + " " + what);
}

void YamlSection::check_keys(const std::vector<std::string>& allowed) const {
  if (!node_.IsMap()) {
    throw ConfigError(where() + ": " + (path_.empty() ? std::string("the document") : path_) +
                      " must be a mapping of keys to values");
  }
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    const std::string key = it->first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::ostringstream msg;
    msg << where(key) << ": unknown key '" << key << "' in " << (path_.empty() ? std::string("the top level") : path_);
    const std::string guess = closest_match(key, allowed);
    if (!guess.empty()) msg << "; did you mean '" << guess << "'?";
    msg << " (valid keys:";
    for (const auto& a : allowed) msg << " " << a;
    msg << ")";
    throw ConfigError(msg.str());
  }
}

bool YamlSection::has(const std::string& key) const {
  return node_.IsMap() && node_[key].IsDefined() && !node_[key].IsNull();
}

YamlSection YamlSection::child(const std::string& key) const {
  return YamlSection(has(key) ? node_[key] : YAML::Node(YAML::NodeType::Map), file_, key_path(key), origins_);
}

namespace {
std::string describe(const YAML::Node& n) {
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "nothing";
}
}  // namespace

int YamlSection::get_int(const std::string& key, int fallback, int min, int max) const {
  if (!has(key)) return fallback;
  const YAML::Node n = node_[key];
  int v = 0;
  if (!n.IsScalar() || !YAML::convert<int>::decode(n, v)) fail(key, "must be an integer, got " + describe(n));
  if (v < min || v > max) {
    fail(key, "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " + std::to_string(v));
  }
  return v;
}

bool YamlSection::get_bool(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const YAML::Node n = node_[key];
  bool v = false;
  if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) fail(key, "must be true or false, got " + describe(n));
  return v;
}

std::string YamlSection::get_string(const std::string& key, const std::string& fallback,
                                    const std::vector<std::string>& choices) const {
  if (!has(key)) return fallback;
  const YAML::Node n = node_[key];
  if (!n.IsScalar()) fail(key, "must be a string, got " + describe(n));
  const std::string v = n.Scalar();
  if (!choices.empty() && std::find(choices.begin(), choices.end(), v) == choices.end()) {
    std::ostringstream msg;
    msg << "must be one of";
    for (const auto& c : choices) msg << " " << c;
    msg << ", got '" << v << "'";
    const std::string guess = closest_match(v, choices);
    if (!guess.empty()) msg << "; did you mean '" << guess << "'?";
    fail(key, msg.str());
  }
  return v;
}

std::vector<std::string> YamlSection::get_string_list(const std::string& key) const {
  std::vector<std::string> out;
  if (!has(key)) return out;
  const YAML::Node n = node_[key];
  if (n.IsScalar()) return {n.Scalar()};
  if (!n.IsSequence()) fail(key, "must be a string or a list of strings, got " + describe(n));
  for (const auto& item : n) {
    if (!item.IsScalar()) fail(key, "must be a list of strings, but an item is " + describe(item));
    out.push_back(item.Scalar());
  }
  return out;
}

std::vector<double> yaml_number_list(const YAML::Node& n, const std::string& file, const std::string& path,
                                     size_t size) {
  auto fail = [&](const std::string& what) {
    throw ConfigError(file + ":" + std::to_string(n.Mark().line + 1) + ": " + path + " " + what);
  };
  if (!n.IsSequence()) fail("must be a list of numbers, got " + describe(n));
  std::vector<double> out;
  for (const auto& item : n) {
    double v = 0;
    if (!item.IsScalar() || !YAML::convert<double>::decode(item, v) || !std::isfinite(v)) {
      fail("must be a list of finite numbers, but an item is " + describe(item));
    }
    out.push_back(v);
  }
  if (size != 0 && out.size() != size) {
    fail("must hold exactly " + std::to_string(size) + " numbers, got " + std::to_string(out.size()));
  }
  return out;
}

}  // namespace orthotron
