// group_json.h: a ParamGroup's full hyperparameters to and from JSON, as recorded in state dicts
// and checkpoints. No tensors.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "optim/param_routing.h"

namespace orthotron {

/// Every hyperparameter of the group's algorithm, plus "name" and "algorithm".
nlohmann::json group_to_json(const ParamGroup& g);
/// The inverse of group_to_json; StateDictError naming the group and field when a field is
/// missing or malformed.
ParamGroup group_from_json(const nlohmann::json& j);

/// The state-dict section an algorithm's state lives in: "muon" or "adamw".
const char* state_section(Algorithm a);

/// Restores, by group name, the hyperparameters of every group in `groups` that belongs to
/// `section`, from that section's JSON (`sec["groups"]`). A missing or unexpected group is passed
/// to `problem` (which throws or records, as the load decides); a group stored under another
/// algorithm is a StateDictError. Shared by the single-process and distributed loads.
void restore_groups(const nlohmann::json& sec, const std::string& section, std::vector<ParamGroup>& groups,
                    const std::function<void(const std::string&)>& problem);

}  // namespace orthotron
