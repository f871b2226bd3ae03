// field_table.h: one table per options struct that declares each field once (key, kind, bounds,
// valid names, one-line doc, how to read and write it) and drives, from that single declaration,
// YAML parsing (unknown key with did-you-mean, wrong type, out of range: ConfigError with
// file:line), YAML and JSON emission, JSON parsing of stored state (InvalidArgument naming the
// key), and validate(). EnumNames lists an enum's valid names once.
// Depends on yaml-cpp, nlohmann_json and base/ only; header-only templates.
#pragma once

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "base/errors.h"
#include "base/yaml_fields.h"

namespace orthotron {

/// The valid names of an enum, listed once; parsing and printing both go through it.
template <typename E>
class EnumNames {
 public:
  EnumNames(std::string what, std::vector<std::pair<E, std::string>> entries)
      : what_(std::move(what)), entries_(std::move(entries)) {}
  const std::string& name(E v) const {
    for (const auto& [e, n] : entries_) {
      if (e == v) return n;
    }
    throw InvalidArgument(what_ + ": value " + std::to_string(static_cast<int>(v)) + " has no name");
  }
  /// InvalidArgument listing the valid names (and the closest one) for an unknown name.
  E parse(const std::string& s) const {
    for (const auto& [e, n] : entries_) {
      if (n == s) return e;
    }
    std::string msg = "unknown " + what_ + " '" + s + "'; valid:";
    for (const auto& n : names()) msg += " " + n;
    const std::string guess = closest_match(s, names());
    if (!guess.empty()) msg += " (did you mean '" + guess + "'?)";
    throw InvalidArgument(msg);
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& entry : entries_) out.push_back(entry.second);
    return out;
  }

 private:
  std::string what_;
  std::vector<std::pair<E, std::string>> entries_;
};

/// What a field holds, which decides how YAML and JSON values are read and checked.
enum class FieldKind {
  kNumber,      ///< finite double within `bounds`
  kInteger,     ///< integer within `bounds`
  kBool,        ///< true / false
  kChoice,      ///< one of `choices`
  kNumberList,  ///< `list_size` finite numbers, each within `bounds`
  kTripleList,  ///< a non-empty list of [a, b, c] finite numbers
  kString,      ///< any scalar, kept as text (paths, names)
};

/// An interval [min, max], either end open.
struct FieldBounds {
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_open = false;
  bool max_open = false;
  bool contains(double v) const { return (min_open ? v > min : v >= min) && (max_open ? v < max : v <= max); }
  std::string to_string() const {
    std::ostringstream out;
    out << (min_open ? "(" : "[") << min << ", " << max << (max_open ? ")" : "]");
    return out.str();
  }
};

/// One field of options struct T.
template <typename T>
struct Field {
  std::string key;
  FieldKind kind = FieldKind::kNumber;
  std::string doc;  ///< one line, for configs/ and error messages
  FieldBounds bounds;
  std::vector<std::string> choices;  ///< kChoice
  size_t list_size = 0;              ///< kNumberList
  std::function<nlohmann::json(const T&)> get;
  std::function<void(T&, const nlohmann::json&)> set;
  /// When set and false for the value being read, the field must be absent (and is not emitted);
  /// `only_when` says when it applies, for the message.
  std::function<bool(const T&)> applies;
  std::string only_when;
};

/// Field constructors for the common cases: `access` returns a reference to the member.
template <typename T, typename V>
Field<T> number_field(std::string key, std::string doc, FieldBounds bounds, V& (*access)(T&)) {
  Field<T> f;
  f.key = std::move(key);
  f.doc = std::move(doc);
  f.bounds = bounds;
  f.kind = std::is_floating_point<V>::value ? FieldKind::kNumber : FieldKind::kInteger;
  f.get = [access](const T& t) { return nlohmann::json(access(const_cast<T&>(t))); };
  f.set = [access](T& t, const nlohmann::json& j) { access(t) = j.get<V>(); };
  return f;
}

template <typename T>
Field<T> bool_field(std::string key, std::string doc, bool& (*access)(T&)) {
  Field<T> f;
  f.key = std::move(key);
  f.doc = std::move(doc);
  f.kind = FieldKind::kBool;
  f.get = [access](const T& t) { return nlohmann::json(access(const_cast<T&>(t))); };
  f.set = [access](T& t, const nlohmann::json& j) { access(t) = j.get<bool>(); };
  return f;
}

template <typename T>
Field<T> string_field(std::string key, std::string doc, std::string& (*access)(T&)) {
  Field<T> f;
  f.key = std::move(key);
  f.doc = std::move(doc);
  f.kind = FieldKind::kString;
  f.get = [access](const T& t) { return nlohmann::json(access(const_cast<T&>(t))); };
  f.set = [access](T& t, const nlohmann::json& j) { access(t) = j.get<std::string>(); };
  return f;
}

template <typename T, typename E>
Field<T> enum_field(std::string key, std::string doc, const EnumNames<E>& names, E& (*access)(T&)) {
  Field<T> f;
  f.key = std::move(key);
  f.doc = std::move(doc);
  f.kind = FieldKind::kChoice;
  f.choices = names.names();
  f.get = [access, &names](const T& t) { return nlohmann::json(names.name(access(const_cast<T&>(t)))); };
  f.set = [access, &names](T& t, const nlohmann::json& j) { access(t) = names.parse(j.get<std::string>()); };
  return f;
}

/// The table. Fields are read and written in table order, so a field may depend on one before it.
template <typename T>
class FieldTable {
 public:
  /// `what` names the struct in messages ("muon options"); `check` holds the cross-field rules and
  /// throws InvalidArgument naming the keys involved.
  FieldTable(std::string what, std::vector<Field<T>> fields, std::function<void(const T&)> check = {})
      : what_(std::move(what)), fields_(std::move(fields)), check_(std::move(check)) {}

  const std::vector<Field<T>>& fields() const { return fields_; }
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (const auto& f : fields_) out.push_back(f.key);
    return out;
  }

  /// Every field's bounds, then the cross-field rules. InvalidArgument "<key> must be ..., got ...".
  void validate(const T& v) const {
    for (const auto& f : fields_) {
      if (f.applies && !f.applies(v)) continue;
      const std::string problem = check_value(f, f.get(v));
      if (problem.empty()) continue;
      // A list element's problem starts with its index: name it as 'key[i]'.
      const size_t close = problem[0] == '[' ? problem.find(']') : std::string::npos;
      if (close != std::string::npos) {
        throw InvalidArgument(what_ + ": '" + f.key + problem.substr(0, close + 1) + "'" + problem.substr(close + 1));
      }
      throw InvalidArgument(what_ + ": '" + f.key + "' " + problem);
    }
    if (check_) check_(v);
  }

  /// Reads the fields present in `s` over `value` (defaults for the rest), then validates. Keys in
  /// `extra_keys` are allowed and left to the caller. ConfigError naming file:line and dotted key.
  T parse_yaml(const YamlSection& s, T value, const std::vector<std::string>& extra_keys = {}) const {
    std::vector<std::string> allowed = keys();
    allowed.insert(allowed.end(), extra_keys.begin(), extra_keys.end());
    s.check_keys(allowed);
    for (const auto& f : fields_) {
      if (!s.has(f.key)) continue;
      if (f.applies && !f.applies(value)) {
        throw ConfigError(s.where(f.key) + ": " + s.key_path(f.key) + " is only read " + f.only_when);
      }
      const nlohmann::json j = from_yaml(f, s.node()[f.key], s);
      const std::string problem = check_value(f, j);
      if (!problem.empty()) {
        throw ConfigError(s.where(f.key) + ": " + s.key_path(f.key) + (problem[0] == '[' ? "" : " ") + problem);
      }
      try {
        f.set(value, j);
      } catch (const InvalidArgument& e) {
        throw ConfigError(s.where(f.key) + ": " + s.key_path(f.key) + ": " + e.what());
      }
    }
    try {
      validate(value);
    } catch (const InvalidArgument& e) {
      throw ConfigError(s.where() + ": " + s.path() + ": " + e.what());
    }
    return value;
  }

  /// Every field that applies, as a JSON object.
  nlohmann::json to_json(const T& v) const {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& f : fields_) {
      if (!f.applies || f.applies(v)) j[f.key] = f.get(v);
    }
    return j;
  }

  /// The inverse of to_json over `value`: every applying field required, nothing else allowed
  /// except `extra_keys`, types and bounds checked, then validate(). InvalidArgument naming the key.
  T from_json(const nlohmann::json& j, T value, const std::vector<std::string>& extra_keys = {}) const {
    if (!j.is_object()) throw InvalidArgument(what_ + " must be a JSON object, got " + std::string(j.type_name()));
    const std::vector<std::string> known = keys();
    for (auto it = j.begin(); it != j.end(); ++it) {
      const bool ok = std::find(known.begin(), known.end(), it.key()) != known.end() ||
                      std::find(extra_keys.begin(), extra_keys.end(), it.key()) != extra_keys.end();
      if (!ok) throw InvalidArgument(what_ + ": unknown key '" + it.key() + "'");
    }
    for (const auto& f : fields_) {
      const bool applies = !f.applies || f.applies(value);
      if (!j.contains(f.key)) {
        if (applies) throw InvalidArgument(what_ + ": key '" + f.key + "' is missing");
        continue;
      }
      if (!applies) throw InvalidArgument(what_ + ": key '" + f.key + "' is only read " + f.only_when);
      const std::string problem = check_json_type(f, j[f.key]) + check_value(f, j[f.key]);
      if (!problem.empty()) throw InvalidArgument(what_ + ": " + f.key + " " + problem);
      f.set(value, j[f.key]);
    }
    validate(value);
    return value;
  }

  /// Emits every applying field as `key: value` into a YAML map under construction.
  void emit_yaml(YAML::Emitter& out, const T& v) const {
    for (const auto& f : fields_) {
      if (f.applies && !f.applies(v)) continue;
      const nlohmann::json j = f.get(v);
      out << YAML::Key << f.key << YAML::Value;
      switch (f.kind) {
        case FieldKind::kNumber:
          out << j.get<double>();
          break;
        case FieldKind::kInteger:
          out << j.get<int64_t>();
          break;
        case FieldKind::kBool:
          out << j.get<bool>();
          break;
        case FieldKind::kChoice:
        case FieldKind::kString:
          out << j.get<std::string>();
          break;
        case FieldKind::kNumberList:
          out << YAML::Flow << j.get<std::vector<double>>();
          break;
        case FieldKind::kTripleList:
          out << YAML::Flow << YAML::BeginSeq;
          for (const auto& row : j) out << YAML::Flow << row.get<std::vector<double>>();
          out << YAML::EndSeq;
          break;
      }
    }
  }

 private:
  static std::string shown(const YAML::Node& n) {
    if (n.IsScalar()) return "'" + n.Scalar() + "'";
    if (n.IsSequence()) return "a list";
    if (n.IsMap()) return "a mapping";
    return "nothing";
  }

  /// A YAML value as JSON of the field's kind; ConfigError for the wrong type.
  static nlohmann::json from_yaml(const Field<T>& f, const YAML::Node& n, const YamlSection& s) {
    auto bad = [&](const std::string& expected) {
      throw ConfigError(s.where(f.key) + ": " + s.key_path(f.key) + " must be " + expected + ", got " + shown(n));
    };
    switch (f.kind) {
      case FieldKind::kNumber: {
        double v = 0;
        if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v)) bad("a number");
        return v;
      }
      case FieldKind::kInteger: {
        int64_t v = 0;
        if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v)) bad("an integer");
        return v;
      }
      case FieldKind::kBool: {
        bool v = false;
        if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) bad("true or false");
        return v;
      }
      case FieldKind::kChoice:
        if (!n.IsScalar()) bad("one of its names");
        return n.Scalar();
      case FieldKind::kString:
        if (!n.IsScalar()) bad("a string");
        return n.Scalar();
      case FieldKind::kNumberList:
        return yaml_number_list(n, s.file(), s.key_path(f.key), f.list_size);
      case FieldKind::kTripleList: {
        if (!n.IsSequence() || n.size() == 0) bad("a non-empty list of [a, b, c] triples");
        nlohmann::json out = nlohmann::json::array();
        for (size_t i = 0; i < n.size(); ++i) {
          out.push_back(yaml_number_list(n[i], s.file(), s.key_path(f.key) + "[" + std::to_string(i) + "]", 3));
        }
        return out;
      }
    }
    return nullptr;
  }

  /// "" when `j` has the JSON type the kind needs, else "must be ..., got <type>".
  static std::string check_json_type(const Field<T>& f, const nlohmann::json& j) {
    auto numbers = [](const nlohmann::json& a, size_t n) {
      if (!a.is_array() || (n != 0 && a.size() != n)) return false;
      return std::all_of(a.begin(), a.end(), [](const nlohmann::json& x) { return x.is_number(); });
    };
    bool ok = false;
    std::string expected;
    switch (f.kind) {
      case FieldKind::kNumber:
        ok = j.is_number();
        expected = "a number";
        break;
      case FieldKind::kInteger:
        ok = j.is_number_integer();
        expected = "an integer";
        break;
      case FieldKind::kBool:
        ok = j.is_boolean();
        expected = "a boolean";
        break;
      case FieldKind::kChoice:
      case FieldKind::kString:
        ok = j.is_string();
        expected = "a string";
        break;
      case FieldKind::kNumberList:
        ok = numbers(j, f.list_size);
        expected = "a list of " + std::to_string(f.list_size) + " numbers";
        break;
      case FieldKind::kTripleList:
        ok = j.is_array() && !j.empty() &&
             std::all_of(j.begin(), j.end(), [&](const nlohmann::json& r) { return numbers(r, 3); });
        expected = "a non-empty list of [a, b, c] number triples";
        break;
    }
    return ok ? "" : "must be " + expected + ", got " + std::string(j.type_name()) + " " + j.dump().substr(0, 40);
  }

  /// "" when a value of the right type is within bounds / among the choices.
  static std::string check_value(const Field<T>& f, const nlohmann::json& j) {
    auto in_bounds = [&](double v) { return std::isfinite(v) && f.bounds.contains(v); };
    std::ostringstream got;
    switch (f.kind) {
      case FieldKind::kNumber:
      case FieldKind::kInteger:
        if (!j.is_number()) return "";
        if (!in_bounds(j.get<double>())) {
          got << "must be in " << f.bounds.to_string() << ", got " << j.dump();
          return got.str();
        }
        return "";
      case FieldKind::kNumberList:
        if (!j.is_array()) return "";
        for (size_t i = 0; i < j.size(); ++i) {
          if (j[i].is_number() && !in_bounds(j[i].get<double>())) {
            got << "[" << i << "] must be in " << f.bounds.to_string() << ", got " << j[i].dump();
            return got.str();
          }
        }
        return "";
      case FieldKind::kChoice: {
        if (!j.is_string()) return "";
        const std::string v = j.get<std::string>();
        if (std::find(f.choices.begin(), f.choices.end(), v) != f.choices.end()) return "";
        std::string msg = "must be one of";
        for (const auto& c : f.choices) msg += " " + c;
        msg += ", got '" + v + "'";
        const std::string guess = closest_match(v, f.choices);
        if (!guess.empty()) msg += "; did you mean '" + guess + "'?";
        return msg;
      }
      default:
        return "";
    }
  }

  std::string what_;
  std::vector<Field<T>> fields_;
  std::function<void(const T&)> check_;
};

}  // namespace orthotron
