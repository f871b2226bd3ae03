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
  /// One line per stored tensor converted to the live dtype ("tensor 'muon/w/momentum': BFloat16 ->
  /// Float, lossless"). Not a skip: a conversion that would lose bits is an error instead.
  std::vector<std::string> converted;
  bool complete() const { return skipped.empty(); }
  std::string to_string() const;
};

/// The dtype rule of every load (optimizer state and checkpointed parameters): a stored tensor whose
/// dtype differs from the live one's is converted to `live` only when the conversion is lossless,
/// i.e. converting the result back gives bitwise the stored tensor (a widening such as BFloat16 ->
/// Float always is; Float -> BFloat16 is only when every value is representable). Both dtypes must
/// be floating point. Returns `stored` itself when the dtypes agree. Throws StateDictError naming
/// `key`, both dtypes and the first element that would change (its flat index and both values).
at::Tensor convert_losslessly(const at::Tensor& stored, at::ScalarType live, const std::string& key);

}  // namespace orthotron
