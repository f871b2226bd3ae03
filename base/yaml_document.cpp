// yaml_document.cpp: yaml-cpp parsing plus a bounded walk for duplicate keys.
#include "base/yaml_document.h"

#include <sys/stat.h>
#include <yaml-cpp/eventhandler.h>

#include <fstream>
#include <set>
#include <sstream>

#include "base/errors.h"

namespace orthotron {

namespace {

std::string at_line(const std::string& source, const YAML::Mark& mark) {
  return mark.line >= 0 ? source + ":" + std::to_string(mark.line + 1) : source;
}

/// Depth-first walk: duplicate keys, depth and node budget.
void check_node(const YAML::Node& node, const std::string& source, size_t depth, size_t& visited) {
  if (++visited > kMaxYamlNodes) {
    throw ConfigError(at_line(source, node.Mark()) + ": the YAML tree has more than " + std::to_string(kMaxYamlNodes) +
                      " nodes (aliases are counted at every use); refusing it");
  }
  if (!node.IsMap() && !node.IsSequence()) return;
  if (depth > kMaxYamlDepth) {
    throw ConfigError(at_line(source, node.Mark()) + ": YAML nested deeper than " + std::to_string(kMaxYamlDepth) +
                      " levels");
  }
  if (node.IsSequence()) {
    for (const auto& item : node) check_node(item, source, depth + 1, visited);
    return;
  }
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (!it->first.IsScalar()) {
      throw ConfigError(at_line(source, it->first.Mark()) + ": a mapping key must be a plain scalar");
    }
    const std::string& key = it->first.Scalar();
    if (!seen.insert(key).second) {
      throw ConfigError(at_line(source, it->first.Mark()) + ": duplicate key '" + key +
                        "' (it is already defined above in the same mapping)");
    }
    check_node(it->second, source, depth + 1, visited);
  }
}

/// Receives a document's events and keeps nothing. yaml-cpp 0.7's LoadAll loops forever, adding a
/// null document per turn until memory runs out, on a stream whose parser stops consuming tokens
/// ("," or "!x, 1]"; yaml-cpp issue #1040, fixed upstream by PR #1319 after 0.8.0), so the documents
/// are counted with a bound first and only the first one is built.
class NullHandler : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

/// The number of documents in `text`, counting no further than `limit`.
size_t count_documents(const std::string& text, size_t limit) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  NullHandler handler;
  size_t count = 0;
  while (count < limit && parser.HandleNextDocument(handler)) ++count;
  return count;
}

}  // namespace

YAML::Node load_yaml_text(const std::string& text, const std::string& source) {
  if (text.size() > kMaxYamlBytes) {
    throw ConfigError(source + ": " + std::to_string(text.size()) + " bytes, above the " +
                      std::to_string(kMaxYamlBytes) + "-byte limit for a config file");
  }
  size_t docs = 0;
  YAML::Node root;
  try {
    docs = count_documents(text, 2);
    if (docs == 1) root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(at_line(source, e.mark) + ": YAML syntax error: " + e.msg);
  }
  if (docs == 0) return YAML::Node(YAML::NodeType::Map);
  if (docs > 1) {
    throw ConfigError(source + ": holds more than one YAML document ('---' separators, or text yaml-cpp reads as " +
                      "further documents); a config file must hold exactly one");
  }
  if (root.IsNull()) return YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) throw ConfigError(at_line(source, root.Mark()) + ": the top level must be a mapping of sections");
  size_t visited = 0;
  check_node(root, source, 0, visited);
  return root;
}

YAML::Node load_yaml_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw ConfigError("cannot read config file '" + path + "': it does not exist");
  if (!S_ISREG(st.st_mode)) throw ConfigError("cannot read config file '" + path + "': not a regular file");
  if (static_cast<size_t>(st.st_size) > kMaxYamlBytes) {
    throw ConfigError("config file '" + path + "' is " + std::to_string(st.st_size) + " bytes, above the " +
                      std::to_string(kMaxYamlBytes) + "-byte limit");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("cannot read config file '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  return load_yaml_text(text.str(), path);
}

YamlSection load_yaml_config(const std::string& path, const std::vector<std::string>& sections) {
  YamlSection root(load_yaml_file(path), path, "");
  root.check_keys(sections);
  return root;
}

}  // namespace orthotron
