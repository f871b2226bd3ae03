// optimizer.h: the interface the single-process and distributed MuonWithAdamW share, so an engine
// drives either one through the same calls.
#pragma once

#include <string>

#include "optim/param_routing.h"
#include "optim/state_dict.h"

namespace orthotron {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  /// One step over the parameters' current gradients (collective in distributed mode).
  virtual void step() = 0;
  /// Resets every parameter's gradient to undefined.
  virtual void zero_grad() = 0;
  /// The state this process holds, keyed by parameter name (see state_dict.h).
  virtual StateDict state_dict() const = 0;
  /// Validates everything, then restores (collective in distributed mode). StateDictError on mismatch.
  /// Files are not the optimizer's business: engine/optimizer_state_files.h writes and reads them.
  virtual LoadReport load_state_dict(const StateDict& sd, const LoadOptions& options) = 0;
  /// The resolved parameter -> group assignment as a table.
  virtual std::string assignment_table() const = 0;
  /// Mutable group access for learning-rate schedules; InvalidArgument for an unknown name.
  virtual ParamGroup& group(const std::string& name) = 0;
};

}  // namespace orthotron
