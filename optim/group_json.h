// group_json.h: a ParamGroup's full hyperparameters to and from JSON, as recorded in state dicts
// and checkpoints. No tensors.
#pragma once

#include <nlohmann/json.hpp>

#include "optim/param_routing.h"

namespace orthotron {

/// Every hyperparameter of the group's algorithm, plus "name" and "algorithm".
nlohmann::json group_to_json(const ParamGroup& g);
/// The inverse of group_to_json; StateDictError naming the group and field when a field is
/// missing or malformed.
ParamGroup group_from_json(const nlohmann::json& j);

}  // namespace orthotron
