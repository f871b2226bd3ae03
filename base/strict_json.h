// strict_json.h: parsing JSON that came from a file, treating every byte as hostile: invalid text,
// a duplicate key in any object, or nesting deeper than a stated cap is a FormatError naming the
// source, never a crash, a silent last-wins or unbounded recursion. Depends on nlohmann_json and
// base/errors.h only.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace orthotron {

/// Nesting depth allowed by default: deeper than any header or record orthotron writes.
constexpr size_t kMaxJsonDepth = 64;

/// Parses `text`. FormatError "<source>: <what>" for invalid JSON, a key repeated within one
/// object (names the key), or objects/arrays nested deeper than `max_depth`.
nlohmann::json parse_json_strict(std::string_view text, const std::string& source, size_t max_depth = kMaxJsonDepth);

/// The JSON type name of `j` ("object", "string", "number", ...), for error messages.
std::string json_type_name(const nlohmann::json& j);

}  // namespace orthotron
