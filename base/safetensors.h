// safetensors.h: reading and writing tensors in the safetensors format (tensors Python can open
// without executing code). Owns the byte layout only; what the tensors mean belongs to the callers.
// The header checks live in safetensors_index.h (torch-free, fuzzed). Depends on LibTorch and base/.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>

namespace orthotron {

struct SafetensorsContent {
  std::map<std::string, at::Tensor> tensors;    ///< CPU, contiguous
  std::map<std::string, std::string> metadata;  ///< the "__metadata__" string map
};

/// Writes `tensors` (any device; copied to CPU contiguous) and `metadata` to `path` through an
/// AtomicFileWriter (temporary name, fsync, rename, directory fsync). The header is padded with
/// spaces to a multiple of 8 and carries "format": "pt". Supported dtypes: F64 F32 F16 BF16 I64
/// I32 I16 I8 U8 BOOL; anything else is a FormatError naming the tensor. Blocking, local file I/O.
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      std::map<std::string, std::string> metadata = {});

/// Reads a safetensors file. Before anything is allocated beyond the header, the whole header is
/// validated against the file's size (see parse_safetensors_header), so a hostile file can cost at
/// most its own size in memory. FormatError naming the file and the problem: not a regular file,
/// unreadable, short, bad header length, malformed or duplicate-keyed JSON, unknown dtype, sizes
/// that do not match dtype x shape, gaps, overlaps, trailing bytes, short reads. Tensors come back
/// on the CPU.
SafetensorsContent load_safetensors(const std::string& path);

/// The safetensors dtype name of a torch dtype ("F32", "BF16", ...), or FormatError.
std::string safetensors_dtype_name(at::ScalarType t);
/// The torch dtype of a safetensors dtype name, or FormatError.
at::ScalarType safetensors_dtype_from_name(const std::string& name);

}  // namespace orthotron
