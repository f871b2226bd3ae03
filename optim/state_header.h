// state_header.h: the identity metadata every optimizer state dict carries (format, version,
// optimizer kind) and its "orthotron.state" JSON, written and checked in one place for the
// single-process and distributed containers.
#pragma once

#include <nlohmann/json.hpp>

#include "optim/state_dict.h"

namespace orthotron {

/// Sets the format, version and optimizer-kind metadata and stores `state` as "orthotron.state".
void write_state_header(StateDict& sd, const nlohmann::json& state);

/// Checks format, version and optimizer kind (never skippable) and returns the parsed
/// "orthotron.state". StateDictError naming the key and the expected versus found value.
nlohmann::json read_state_header(const StateDict& sd);

/// The metadata value of `key`; StateDictError when absent.
const std::string& state_metadata(const StateDict& sd, const std::string& key);

}  // namespace orthotron
