// strict_json.cpp: nlohmann's parser with a callback that tracks depth and the keys of every open
// object.
#include "base/strict_json.h"

#include <set>
#include <vector>

#include "base/errors.h"

namespace orthotron {

nlohmann::json parse_json_strict(std::string_view text, const std::string& source, size_t max_depth) {
  // Cheap pre-scan: nlohmann's parser is iterative, but refusing deep nesting before building
  // anything keeps every later recursive walk (dump, comparison, destruction) bounded too.
  size_t depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) {
        throw FormatError(source + ": JSON nested deeper than " + std::to_string(max_depth) + " levels");
      }
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }

  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    switch (event) {
      case E::object_start:
        open_objects.emplace_back();
        break;
      case E::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case E::key:
        if (!open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default:
        break;
    }
    return true;
  };
  nlohmann::json out;
  try {
    out = nlohmann::json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(source + ": invalid JSON: " + e.what());
  }
  if (!duplicate.empty()) throw FormatError(source + ": duplicate JSON key '" + duplicate + "'");
  return out;
}

std::string json_type_name(const nlohmann::json& j) {
  return j.type_name();
}

}  // namespace orthotron
