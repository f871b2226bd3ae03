// param_routing.h: named parameters, optimizer groups, and the ordered routing rules that assign
// each parameter to exactly one group (first match wins). No tensor math, no communication.
#pragma once

#include <ATen/ATen.h>

#include <climits>
#include <string>
#include <vector>

#include "optim/adamw.h"
#include "optim/muon.h"

namespace orthotron {

/// A parameter and the name it is known by in checkpoints and configs ("layers.0.attn.qkv.weight").
struct NamedParameter {
  std::string name;
  at::Tensor tensor;
};
using NamedParameters = std::vector<NamedParameter>;

/// A parameter as routing, splitting and owner plans see it: its name and its logical shape, the
/// shape of the whole parameter (never a shard's or a flattened view's). Plans built from these
/// alone can be computed for any world size without allocating a tensor.
struct ParamShape {
  std::string name;
  std::vector<int64_t> shape;
};
/// The names and current shapes of `params`, which must be whole parameters.
std::vector<ParamShape> logical_shapes(const NamedParameters& params);

enum class Algorithm { kMuon, kAdamW };
std::string to_string(Algorithm a);
/// "muon" or "adamw"; InvalidArgument otherwise.
Algorithm parse_algorithm(const std::string& s);

/// One optimizer group: an algorithm and its full hyperparameters (only the matching half is used).
struct ParamGroup {
  std::string name;
  Algorithm algorithm = Algorithm::kMuon;
  MuonOptions muon;
  AdamWOptions adamw;
};

/// One routing rule. A parameter matches when its name matches any of `patterns` (shell globs,
/// fnmatch; an empty list matches every name) and its rank lies in [min_dim, max_dim].
struct RoutingRule {
  std::string name;                   ///< shown in the assignment table and in errors
  std::vector<std::string> patterns;  ///< globs on the parameter name
  int min_dim = 0;
  int max_dim = INT_MAX;
  std::string group;       ///< a ParamGroup name
  bool must_match = true;  ///< a user rule that claims nothing is an error; built-in defaults set false
  std::string origin;      ///< "file:line" for rules from YAML, for error messages

  bool matches(const std::string& param_name, int64_t dim) const;
};

/// The default groups: "muon" (MuonOptions defaults) and "adamw" (AdamWOptions defaults).
std::vector<ParamGroup> default_groups();

/// The default rules, in order: embeddings and the output head, norms, biases and any 0/1-D
/// tensor go to group "adamw"; every other >= 2-D weight to group "muon".
std::vector<RoutingRule> default_routing_rules();

/// One parameter's resolved group.
struct Assignment {
  std::string param;
  std::vector<int64_t> shape;
  size_t group_index = 0;
  std::string rule;
};

/// Routes every parameter through `rules` (first match wins) by its name and logical shape. Throws
/// RoutingError when a parameter name repeats, a rule names an unknown group, a must_match rule
/// claims nothing, no rule claims a parameter, a <2-D parameter lands in a Muon group, or a Muon
/// group ends up with no parameter at all (fail closed: Muon must never silently become AdamW-only).
std::vector<Assignment> route_parameters(const std::vector<ParamShape>& params, const std::vector<ParamGroup>& groups,
                                         const std::vector<RoutingRule>& rules);

/// ShapeError unless `tensor` still has the logical shape `a` was routed with. Containers call it
/// every step: a parameter replaced by a shard, a flattened or a reshaped view after construction
/// would otherwise be split and orthogonalized by the wrong shape.
void check_logical_shape(const Assignment& a, const at::Tensor& tensor);

/// Validates every group's hyperparameters; InvalidArgument naming the group and the field.
void validate_groups(const std::vector<ParamGroup>& groups);

/// The assignment as an aligned table (parameter, shape, group, algorithm, rule), for printing once.
std::string format_assignment(const std::vector<Assignment>& assignment, const std::vector<ParamGroup>& groups);

}  // namespace orthotron
