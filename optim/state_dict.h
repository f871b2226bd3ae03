// state_dict.h: the optimizer state dict as it travels between memory and disk (tensors plus a
// string metadata map, stored as one safetensors file), and the options and report of a load.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

namespace orthotron {

/// Format version written by this build; loads of any other version are refused.
constexpr int kOptimizerStateFormatVersion = 1;

/// Tensors keyed "<section>/<parameter name>/<slot>" (section "muon" or "adamw"), plus metadata:
/// "orthotron.format" = "optimizer_state", "orthotron.format_version", "orthotron.optimizer",
/// and "orthotron.state": JSON with each section's groups (full hyperparameters) and parameters
/// (group, step count, shape, dtype).
struct StateDict {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

/// Writes `sd` to `path` as safetensors (atomic rename). Python opens it with safetensors.torch.load_file.
void save_state_dict(const StateDict& sd, const std::string& path);
/// Reads a file written by save_state_dict; FormatError when the bytes are not safetensors.
StateDict load_state_dict_file(const std::string& path);

struct LoadOptions {
  /// Skip (and report) missing or unexpected parameters, sections, tensors and shape mismatches
  /// instead of throwing. Format version and optimizer kind mismatches are errors regardless.
  bool allow_partial = false;
};

/// What a load did beyond a clean one-to-one restore. Empty after a complete load.
struct LoadReport {
  std::vector<std::string> skipped;  ///< one line per skipped item, naming it and why
  bool complete() const { return skipped.empty(); }
  std::string to_string() const;
};

}  // namespace orthotron
