// safetensors_index.h: the safetensors header (u64 little-endian length, JSON header, raw data) as
// an index of tensor names, dtypes, shapes and byte ranges, validated against the file's size
// before a single tensor byte is allocated or read. Every byte is treated as hostile. Torch-free,
// so the fuzz harness (tests/fuzz/) exercises exactly the code the loader runs.
// Depends on base/strict_json.h and base/errors.h only.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace orthotron {

/// Largest header accepted (the safetensors library's own cap is the same 100 MB).
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull * 1000 * 1000;
/// Largest tensor rank accepted.
constexpr size_t kMaxSafetensorsRank = 16;

struct SafetensorsEntry {
  std::string name;
  std::string dtype;           ///< "F32", "BF16", ...
  std::vector<int64_t> shape;  ///< every dimension >= 0
  uint64_t begin = 0;          ///< byte range within the data section
  uint64_t end = 0;
};

struct SafetensorsIndex {
  std::vector<SafetensorsEntry> entries;        ///< sorted by begin; they tile the data section exactly
  std::map<std::string, std::string> metadata;  ///< the "__metadata__" string map
  uint64_t header_len = 0;
  uint64_t data_start = 0;  ///< 8 + header_len
};

/// Bytes per element of a safetensors dtype name; FormatError for an unknown name.
size_t safetensors_dtype_size(const std::string& dtype);

/// The header length stored in a file's first 8 bytes.
uint64_t decode_safetensors_header_length(const unsigned char bytes[8]);

/// Validates the header length against `file_size` and the cap, before the header is read.
/// FormatError naming `path`.
void check_safetensors_header_length(uint64_t header_len, uint64_t file_size, const std::string& path);

/// Parses and validates `header` (the JSON text) of a file of `file_size` bytes: strict JSON (no
/// duplicate keys, bounded depth), an object whose "__metadata__" maps strings to strings and
/// whose other entries each hold exactly a known "dtype", a "shape" of non-negative integers (at
/// most kMaxSafetensorsRank, element count without overflow) and "data_offsets" [begin, end] with
/// end - begin = elements x dtype size; the entries must tile the data section with no gap,
/// overlap or trailing byte. FormatError "safetensors file '<path>': <what>" otherwise.
SafetensorsIndex parse_safetensors_header(std::string_view header, uint64_t file_size, const std::string& path);

/// The whole check for a file held in memory (header length, header, layout); for fuzzing and tests.
SafetensorsIndex parse_safetensors_bytes(std::string_view file_bytes, const std::string& path);

}  // namespace orthotron
