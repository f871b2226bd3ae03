// muon_with_adamw.h: the MuonWithAdamW container: one step() and one state dict over named
// parameters routed to Muon groups (hidden matrices) and AdamW groups (everything else).
// Single-process; the distributed version keeps this API.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "optim/muon_batch.h"
#include "optim/optimizer.h"
#include "optim/owner_plan.h"
#include "optim/param_routing.h"
#include "optim/split_registry.h"
#include "optim/state_dict.h"

namespace orthotron {

class MuonWithAdamW : public Optimizer {
 public:
  /// Routes `params` with `rules` (first match wins) into `groups` and validates every group's
  /// hyperparameters. Fused Muon parameters listed in `splits` are orthogonalized part by part.
  /// Routing and splits see each parameter's logical shape (its tensor's shape now), through the
  /// same plan_params a shape-only caller uses. Throws RoutingError, InvalidArgument or ShapeError. Parameters are held
  /// by reference (tensor handles): step() updates the caller's tensors in place.
  explicit MuonWithAdamW(NamedParameters params, std::vector<ParamGroup> groups = default_groups(),
                         std::vector<RoutingRule> rules = default_routing_rules(), SplitRegistry splits = {});

  /// One optimizer step over every parameter whose .grad() is defined; parameters without a
  /// gradient are skipped (their state does not advance). Same-shape Muon matrices of a group are
  /// orthogonalized in one batched Newton-Schulz call. Runs under a NoGradGuard. Blocking.
  /// ShapeError when a parameter's tensor no longer has the shape it was routed with. With debug
  /// checks on (debug_checks.h), the NS work is audited against the plan (ns_audit.h).
  void step() override;

  /// The Newton-Schulz work of the last step, per group index.
  const NsCounts& last_ns_counts() const { return last_ns_counts_; }
  /// Routing, matrices and NS cost of every parameter, in parameter order.
  const std::vector<PlanParam>& plan() const { return plan_; }

  /// Resets every parameter's gradient to undefined.
  void zero_grad() override;

  const std::vector<Assignment>& assignment() const { return assignment_; }
  /// The resolved assignment as a table (print it once, on rank 0).
  std::string assignment_table() const override { return format_assignment(assignment_, groups_); }

  const std::vector<ParamGroup>& groups() const { return groups_; }
  /// Mutable access for learning-rate schedules; InvalidArgument for an unknown name.
  ParamGroup& group(const std::string& name) override;

  /// The state keyed by parameter name (see state_dict.h for the layout).
  StateDict state_dict() const override;
  /// Validates everything first (decode_optimizer_state), then restores state and step counters.
  /// Throws StateDictError naming the parameter, section, tensor, expected and actual value, unless
  /// options.allow_partial, in which case the skipped items are listed in the report. On an error
  /// nothing has been changed. Group hyperparameters stay as configured; the stored values that
  /// differ are listed in the report's changed_hyperparameters.
  LoadReport load_state_dict(const StateDict& sd, const LoadOptions& options = {}) override;

  /// Per-parameter state, for tests and diagnostics (undefined tensors before the first step).
  const at::Tensor& muon_momentum(const std::string& param) const;
  const AdamWState& adamw_state(const std::string& param) const;
  int64_t step_count(const std::string& param) const;

 private:
  struct Slot {
    NamedParameter param;
    size_t group = 0;
    at::Tensor momentum;  // Muon groups
    AdamWState adamw;     // AdamW groups (its .step is the step count there)
    int64_t muon_steps = 0;
  };
  const Slot& slot(const std::string& param) const;

  std::vector<Slot> slots_;
  std::vector<ParamGroup> groups_;
  SplitRegistry splits_;
  std::vector<Assignment> assignment_;
  std::vector<PlanParam> plan_;
  NsCounts last_ns_counts_;
  std::map<std::string, size_t> index_;
};

}  // namespace orthotron
