// state_dict.cpp: state dict file I/O through safetensors.
#include "optim/state_dict.h"

#include <sstream>

#include "optim/safetensors.h"

namespace orthotron {

void save_state_dict(const StateDict& sd, const std::string& path) { save_safetensors(path, sd.tensors, sd.metadata); }

StateDict load_state_dict_file(const std::string& path) {
  SafetensorsContent c = load_safetensors(path);
  StateDict sd;
  sd.tensors = std::move(c.tensors);
  sd.metadata = std::move(c.metadata);
  return sd;
}

std::string LoadReport::to_string() const {
  if (skipped.empty()) return "complete load";
  std::ostringstream out;
  out << "partial load, " << skipped.size() << " item(s) skipped:";
  for (const auto& s : skipped) out << "\n  - " << s;
  return out.str();
}

}  // namespace orthotron
