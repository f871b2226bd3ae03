// state_dict.cpp: state dict file I/O through safetensors.
#include "optim/state_dict.h"

#include <sstream>

#include "optim/safetensors.h"
#include "optim/state_header.h"
#include "parallel/errors.h"

namespace orthotron {

void save_state_dict(const StateDict& sd, const std::string& path) {
  save_safetensors(path, sd.tensors, sd.metadata);
}

StateDict load_state_dict_file(const std::string& path) {
  SafetensorsContent c = load_safetensors(path);
  StateDict sd;
  sd.tensors = std::move(c.tensors);
  sd.metadata = std::move(c.metadata);
  return sd;
}

const std::string& state_metadata(const StateDict& sd, const std::string& key) {
  auto it = sd.metadata.find(key);
  if (it == sd.metadata.end()) {
    throw StateDictError("state dict has no metadata key '" + key +
                         "': it was not written by orthotron's MuonWithAdamW (or is damaged)");
  }
  return it->second;
}

void write_state_header(StateDict& sd, const nlohmann::json& state) {
  sd.metadata["orthotron.format"] = "optimizer_state";
  sd.metadata["orthotron.format_version"] = std::to_string(kOptimizerStateFormatVersion);
  sd.metadata["orthotron.optimizer"] = "MuonWithAdamW";
  sd.metadata["orthotron.state"] = state.dump();
}

nlohmann::json read_state_header(const StateDict& sd) {
  if (state_metadata(sd, "orthotron.format") != "optimizer_state") {
    throw StateDictError("load_state_dict: metadata 'orthotron.format' is '" + state_metadata(sd, "orthotron.format") +
                         "', expected 'optimizer_state'");
  }
  if (state_metadata(sd, "orthotron.format_version") != std::to_string(kOptimizerStateFormatVersion)) {
    throw StateDictError("load_state_dict: state dict format version " +
                         state_metadata(sd, "orthotron.format_version") + ", this build reads version " +
                         std::to_string(kOptimizerStateFormatVersion));
  }
  if (state_metadata(sd, "orthotron.optimizer") != "MuonWithAdamW") {
    throw StateDictError("load_state_dict: state dict holds optimizer kind '" +
                         state_metadata(sd, "orthotron.optimizer") + "', expected 'MuonWithAdamW'");
  }
  try {
    return nlohmann::json::parse(state_metadata(sd, "orthotron.state"));
  } catch (const nlohmann::json::exception& e) {
    throw StateDictError(std::string("load_state_dict: metadata 'orthotron.state' is not valid JSON: ") + e.what());
  }
}

std::string LoadReport::to_string() const {
  if (skipped.empty()) return "complete load";
  std::ostringstream out;
  out << "partial load, " << skipped.size() << " item(s) skipped:";
  for (const auto& s : skipped) out << "\n  - " << s;
  return out.str();
}

}  // namespace orthotron
