// state_dict.h: the optimizer state dict as optimizers hand it out and take it back (tensors plus a
// string metadata map; engine/ stores it as safetensors), and the options and report of a load.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

namespace orthotron {

/// Format version written by this build; loads of any other version are refused.
constexpr int kOptimizerStateFormatVersion = 2;

/// Tensors keyed "<section>/<parameter name>/<slot>" (section "muon" or "adamw"), plus metadata:
/// "orthotron.format" = "optimizer_state", "orthotron.format_version", "orthotron.optimizer",
/// and "orthotron.state": JSON with each section's groups (full hyperparameters) and parameters
/// (group, step count, shape, dtype).
struct StateDict {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

struct LoadOptions {
  /// Skip (and report) missing or unexpected parameters, sections, tensors and shape mismatches
  /// instead of throwing. Format version and optimizer kind mismatches are errors regardless.
  bool allow_partial = false;
};

/// What a load did beyond a clean one-to-one restore. Empty after a complete load.
struct LoadReport {
  std::vector<std::string> skipped;  ///< one line per skipped item, naming it and why
  /// One line per stored hyperparameter that differs from the running config ("group 'muon': lr
  /// 0.02 in the state, 0.01 in the config; the config's value is used"). Not a skip.
  std::vector<std::string> changed_hyperparameters;
  bool complete() const { return skipped.empty(); }
  std::string to_string() const;
};

}  // namespace orthotron
