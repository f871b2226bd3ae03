// safetensors_index.cpp: header validation, in the order that keeps every later allocation bounded
// by the file's size.
#include "base/safetensors_index.h"

#include <algorithm>
#include <limits>

#include "base/errors.h"
#include "base/strict_json.h"

namespace orthotron {

namespace {

struct DtypeSize {
  const char* name;
  size_t size;
};
constexpr DtypeSize kDtypeSizes[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                                     {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw FormatError("safetensors file '" + path + "': " + what);
}

uint64_t non_negative_integer(const nlohmann::json& j, const std::string& path, const std::string& what) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer()) fail(path, what + " is negative (" + j.dump() + ")");
  fail(path, what + " must be a non-negative integer, got " + json_type_name(j) + " " + j.dump().substr(0, 40));
}

SafetensorsEntry parse_entry(const std::string& name, const nlohmann::json& entry, uint64_t data_size,
                             const std::string& path) {
  const std::string label = "tensor '" + name + "'";
  if (!entry.is_object()) fail(path, label + " must be an object, got " + json_type_name(entry));
  for (auto it = entry.begin(); it != entry.end(); ++it) {
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets") {
      fail(path, label + " has unknown field '" + it.key() + "' (expected dtype, shape, data_offsets)");
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) fail(path, label + " has no '" + key + "'");
  }
  SafetensorsEntry e;
  e.name = name;
  const auto& dtype = entry["dtype"];
  if (!dtype.is_string()) fail(path, label + " dtype must be a string, got " + json_type_name(dtype));
  e.dtype = dtype.get<std::string>();
  size_t elem = 0;
  try {
    elem = safetensors_dtype_size(e.dtype);
  } catch (const FormatError& err) {
    fail(path, label + ": " + err.what());
  }
  const auto& shape = entry["shape"];
  if (!shape.is_array()) fail(path, label + " shape must be an array, got " + json_type_name(shape));
  if (shape.size() > kMaxSafetensorsRank) {
    fail(path, label + " has rank " + std::to_string(shape.size()) + ", above the limit of " +
                   std::to_string(kMaxSafetensorsRank));
  }
  // Element count with overflow checks: bytes must fit the data section anyway.
  uint64_t bytes = elem;
  bool zero = false;
  for (size_t d = 0; d < shape.size(); ++d) {
    const uint64_t dim = non_negative_integer(shape[d], path, label + " shape[" + std::to_string(d) + "]");
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(path, label + " shape[" + std::to_string(d) + "] = " + std::to_string(dim) + " exceeds int64");
    }
    e.shape.push_back(static_cast<int64_t>(dim));
    if (dim == 0) zero = true;
    if (!zero && bytes > data_size / dim) {
      fail(path, label + " shape " + shape.dump() + " needs more bytes than the file's " + std::to_string(data_size) +
                     "-byte data section holds");
    }
    if (!zero) bytes *= dim;
  }
  if (zero) bytes = 0;
  const auto& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    fail(path, label + " data_offsets must be an array of 2 integers, got " + offsets.dump().substr(0, 60));
  }
  e.begin = non_negative_integer(offsets[0], path, label + " data_offsets[0]");
  e.end = non_negative_integer(offsets[1], path, label + " data_offsets[1]");
  if (e.begin > e.end) {
    fail(path, label + " data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] run backwards");
  }
  if (e.end > data_size) {
    fail(path, label + " ends at data byte " + std::to_string(e.end) + ", past the " + std::to_string(data_size) +
                   "-byte data section");
  }
  if (e.end - e.begin != bytes) {
    fail(path, label + " spans " + std::to_string(e.end - e.begin) + " bytes but dtype " + e.dtype + " x shape " +
                   shape.dump() + " needs " + std::to_string(bytes));
  }
  return e;
}

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype) {
  for (const auto& d : kDtypeSizes) {
    if (dtype == d.name) return d.size;
  }
  std::string names;
  for (const auto& d : kDtypeSizes) names += std::string(" ") + d.name;
  throw FormatError("unknown safetensors dtype '" + dtype.substr(0, 40) + "' (known:" + names + ")");
}

uint64_t decode_safetensors_header_length(const unsigned char bytes[8]) {
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i) len |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  return len;
}

void check_safetensors_header_length(uint64_t header_len, uint64_t file_size, const std::string& path) {
  if (file_size < 8) {
    fail(path, "file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
  }
  if (header_len > kMaxSafetensorsHeaderBytes) {
    fail(path, "header length " + std::to_string(header_len) + " is above the limit of " +
                   std::to_string(kMaxSafetensorsHeaderBytes) + " bytes");
  }
  if (header_len > file_size - 8) {
    fail(path, "header length " + std::to_string(header_len) + " exceeds the file's remaining " +
                   std::to_string(file_size - 8) + " bytes");
  }
  if (header_len < 2) fail(path, "header length " + std::to_string(header_len) + " is too short for a JSON object");
}

SafetensorsIndex parse_safetensors_header(std::string_view header, uint64_t file_size, const std::string& path) {
  check_safetensors_header_length(header.size(), file_size, path);
  SafetensorsIndex index;
  index.header_len = header.size();
  index.data_start = 8 + header.size();
  const uint64_t data_size = file_size - index.data_start;
  const nlohmann::json j = parse_json_strict(header, "safetensors file '" + path + "' header");
  if (!j.is_object()) fail(path, "header must be a JSON object, got " + json_type_name(j));
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) fail(path, "__metadata__ must be an object, got " + json_type_name(it.value()));
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) {
          fail(path, "__metadata__ value of '" + m.key() + "' must be a string, got " + json_type_name(m.value()));
        }
        index.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    index.entries.push_back(parse_entry(it.key(), it.value(), data_size, path));
  }
  std::sort(index.entries.begin(), index.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const auto& e : index.entries) {
    if (e.begin != cursor) {
      fail(path, "tensor '" + e.name + "' starts at data byte " + std::to_string(e.begin) + ", expected " +
                     std::to_string(cursor) + " (" + (e.begin < cursor ? "overlaps the tensor before it" : "gap") +
                     ")");
    }
    cursor = e.end;
  }
  if (cursor != data_size) fail(path, std::to_string(data_size - cursor) + " trailing bytes after the last tensor");
  return index;
}

SafetensorsIndex parse_safetensors_bytes(std::string_view file_bytes, const std::string& path) {
  const uint64_t size = file_bytes.size();
  if (size < 8) check_safetensors_header_length(0, size, path);
  unsigned char len_bytes[8];
  std::copy(file_bytes.begin(), file_bytes.begin() + 8, len_bytes);
  const uint64_t header_len = decode_safetensors_header_length(len_bytes);
  check_safetensors_header_length(header_len, size, path);
  return parse_safetensors_header(file_bytes.substr(8, header_len), size, path);
}

}  // namespace orthotron
