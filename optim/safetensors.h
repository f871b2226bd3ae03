// safetensors.h: reading and writing the safetensors format (tensors Python can open without
// executing code). Owns the byte layout only; what the tensors mean belongs to the callers.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>

namespace orthotron {

struct SafetensorsContent {
  std::map<std::string, at::Tensor> tensors;    ///< CPU, contiguous
  std::map<std::string, std::string> metadata;  ///< the "__metadata__" string map
};

/// Writes `tensors` (any device; copied to CPU contiguous) and `metadata` to `path` atomically:
/// the bytes go to `path.tmp`, are fsynced, then renamed over `path`. The header is padded with
/// spaces to a multiple of 8 and carries "format": "pt". Supported dtypes: F64 F32 F16 BF16 I64
/// I32 I16 I8 U8 BOOL; anything else is a FormatError naming the tensor. Blocking, local file I/O.
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      std::map<std::string, std::string> metadata = {});

/// Reads a safetensors file, rejecting (FormatError naming the file and the problem) a short
/// file, a bad header length, malformed JSON, an unknown dtype, sizes that do not match dtype x
/// shape, gaps or overlaps between tensors, and trailing bytes. Tensors come back on the CPU.
SafetensorsContent load_safetensors(const std::string& path);

/// The safetensors dtype name of a torch dtype ("F32", "BF16", ...), or FormatError.
std::string safetensors_dtype_name(at::ScalarType t);
/// The torch dtype of a safetensors dtype name, or FormatError.
at::ScalarType safetensors_dtype_from_name(const std::string& name);

}  // namespace orthotron
