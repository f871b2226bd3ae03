// optimizer_state.cpp: encode, validate and decode MuonWithAdamW state, for every container.
#include "optim/optimizer_state.h"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "base/errors.h"
#include "base/safetensors.h"
#include "base/strict_json.h"
#include "optim/option_fields.h"

namespace orthotron {

namespace {

constexpr const char* kSections[] = {"muon", "adamw"};
const std::vector<std::string> kEntryKeys = {"group", "step", "shape", "dtype", "range"};

std::string tensor_key(const std::string& section, const std::string& param, const std::string& slot) {
  return section + "/" + param + "/" + slot;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return c10::str(c10::IntArrayRef(shape));
}

[[noreturn]] void fail(const std::string& what) {
  throw StateDictError("load_state_dict: " + what);
}

const std::string& metadata(const StateDict& sd, const std::string& key) {
  auto it = sd.metadata.find(key);
  if (it == sd.metadata.end()) {
    fail("the state dict has no metadata key '" + key +
         "': it was not written by orthotron's MuonWithAdamW (or is damaged)");
  }
  return it->second;
}

nlohmann::json group_to_json(const ParamGroup& g) {
  nlohmann::json j =
      g.algorithm == Algorithm::kMuon ? muon_option_fields().to_json(g.muon) : adamw_option_fields().to_json(g.adamw);
  j["name"] = g.name;
  j["algorithm"] = to_string(g.algorithm);
  return j;
}

/// A stored group, validated by the option tables; StateDictError naming the group and key.
ParamGroup group_from_json(const std::string& name, const nlohmann::json& j) {
  ParamGroup g;
  g.name = name;
  try {
    if (!j.is_object()) throw InvalidArgument("must be a JSON object, got " + json_type_name(j));
    if (!j.contains("algorithm") || !j["algorithm"].is_string()) {
      throw InvalidArgument("'algorithm' is missing or not a string");
    }
    g.algorithm = parse_algorithm(j["algorithm"].get<std::string>());
    if (g.algorithm == Algorithm::kMuon) {
      g.muon = muon_option_fields().from_json(j, MuonOptions{}, {"name", "algorithm"});
    } else {
      g.adamw = adamw_option_fields().from_json(j, AdamWOptions{}, {"name", "algorithm"});
    }
  } catch (const InvalidArgument& e) {
    fail("group '" + name + "' in the state dict: " + e.what());
  }
  return g;
}

/// Every key whose stored value differs from the running group's.
void note_hyperparameter_changes(const ParamGroup& stored, const ParamGroup& live, LoadReport& report) {
  const nlohmann::json a = group_to_json(stored), b = group_to_json(live);
  for (auto it = b.begin(); it != b.end(); ++it) {
    const nlohmann::json old = a.contains(it.key()) ? a[it.key()] : nlohmann::json();
    if (old != it.value()) {
      report.changed_hyperparameters.push_back("group '" + live.name + "': " + it.key() + " " + old.dump() +
                                               " in the state, " + it.value().dump() +
                                               " in the config; the config's value is used");
    }
  }
}

int64_t stored_step(const nlohmann::json& j, const std::string& param) {
  if (!j.is_number_integer()) {
    fail("parameter '" + param + "' has step " + j.dump().substr(0, 40) + ", expected an integer");
  }
  if (j.is_number_unsigned() ? j.get<uint64_t>() > static_cast<uint64_t>(kMaxStateSteps)
                             : (j.get<int64_t>() < 0 || j.get<int64_t>() > kMaxStateSteps)) {
    fail("parameter '" + param + "' has step " + j.dump() + ", expected an integer in [0, " +
         std::to_string(kMaxStateSteps) + "]");
  }
  return j.get<int64_t>();
}

std::vector<int64_t> stored_ints(const nlohmann::json& j, const std::string& what) {
  if (!j.is_array() ||
      !std::all_of(j.begin(), j.end(), [](const nlohmann::json& x) { return x.is_number_integer(); })) {
    fail(what + " must be a list of integers, got " + j.dump().substr(0, 60));
  }
  return j.get<std::vector<int64_t>>();
}

/// Finite values; a second moment must also be >= 0. StateDictError naming the tensor.
void check_values(const at::Tensor& t, const std::string& key, bool second_moment) {
  if (t.numel() == 0 || !at::isFloatingType(t.scalar_type())) return;
  const at::Tensor bad = second_moment ? (~at::isfinite(t)) | (t < 0) : ~at::isfinite(t);
  const int64_t n = bad.sum().item<int64_t>();
  if (n > 0) {
    const int64_t first = bad.reshape(-1).nonzero()[0][0].item<int64_t>();
    std::ostringstream msg;
    msg << "tensor '" << key << "' holds " << n << " " << (second_moment ? "non-finite or negative" : "non-finite")
        << " value(s), the first at flat index " << first << " (" << t.reshape(-1)[first].item<double>() << ")";
    fail(msg.str());
  }
}

}  // namespace

const std::vector<std::string>& state_slots(Algorithm a) {
  static const std::vector<std::string> muon = {"momentum"}, adamw = {"exp_avg", "exp_avg_sq"};
  return a == Algorithm::kMuon ? muon : adamw;
}

const char* state_section(Algorithm a) {
  return a == Algorithm::kMuon ? "muon" : "adamw";
}

StateDict encode_optimizer_state(const std::vector<ParamGroup>& groups, const std::vector<StateEntry>& entries,
                                 const std::optional<nlohmann::json>& layout) {
  StateDict sd;
  nlohmann::json state = nlohmann::json::object();
  for (const char* section : kSections) {
    state[section] = {{"groups", nlohmann::json::object()}, {"params", nlohmann::json::object()}};
  }
  for (const auto& g : groups) state[state_section(g.algorithm)]["groups"][g.name] = group_to_json(g);
  for (const auto& e : entries) {
    const char* section = state_section(e.algorithm);
    nlohmann::json j = {
        {"group", e.group}, {"step", e.step}, {"shape", e.shape}, {"dtype", safetensors_dtype_name(e.dtype)}};
    if (e.range) j["range"] = {(*e.range)[0], (*e.range)[1]};
    state[section]["params"][e.name] = j;
    const auto& slots = state_slots(e.algorithm);
    if (e.tensors.empty()) continue;
    if (e.tensors.size() != slots.size()) {
      throw InvalidArgument("encode_optimizer_state: parameter '" + e.name + "' has " +
                            std::to_string(e.tensors.size()) + " state tensors, expected " +
                            std::to_string(slots.size()));
    }
    for (size_t k = 0; k < slots.size(); ++k) sd.tensors[tensor_key(section, e.name, slots[k])] = e.tensors[k];
  }
  sd.metadata["orthotron.format"] = "optimizer_state";
  sd.metadata["orthotron.format_version"] = std::to_string(kOptimizerStateFormatVersion);
  sd.metadata["orthotron.optimizer"] = "MuonWithAdamW";
  sd.metadata["orthotron.state"] = state.dump();
  if (layout) sd.metadata["orthotron.layout"] = layout->dump();
  return sd;
}

DecodedState decode_optimizer_state(const StateDict& sd, const std::vector<ParamGroup>& groups,
                                    const std::vector<ExpectedParam>& expected, bool expect_layout,
                                    const LoadOptions& options,
                                    const std::function<void(const nlohmann::json&)>& check_layout) {
  DecodedState out;
  auto problem = [&](const std::string& what) {
    if (!options.allow_partial) fail(what + " (pass allow_partial to skip it)");
    out.report.skipped.push_back(what);
  };

  // 1. Identity: format, version, optimizer kind (never skippable).
  if (metadata(sd, "orthotron.format") != "optimizer_state") {
    fail("metadata 'orthotron.format' is '" + metadata(sd, "orthotron.format") + "', expected 'optimizer_state'");
  }
  if (metadata(sd, "orthotron.format_version") != std::to_string(kOptimizerStateFormatVersion)) {
    fail("state dict format version " + metadata(sd, "orthotron.format_version") + ", this build reads version " +
         std::to_string(kOptimizerStateFormatVersion));
  }
  if (metadata(sd, "orthotron.optimizer") != "MuonWithAdamW") {
    fail("state dict holds optimizer kind '" + metadata(sd, "orthotron.optimizer") + "', expected 'MuonWithAdamW'");
  }
  nlohmann::json state;
  try {
    state = parse_json_strict(metadata(sd, "orthotron.state"), "metadata 'orthotron.state'");
  } catch (const FormatError& e) {
    fail(e.what());
  }
  if (!state.is_object()) fail("metadata 'orthotron.state' must be a JSON object, got " + json_type_name(state));
  const bool has_layout = sd.metadata.count("orthotron.layout") != 0;
  if (has_layout != expect_layout) {
    fail(has_layout ? "the state dict carries a data-parallel layout record ('orthotron.layout'): it holds one "
                      "rank's shard and loads only into DistributedMuonWithAdamW"
                    : "the state dict has no 'orthotron.layout' record: it was saved by the single-process "
                      "MuonWithAdamW, not by a data-parallel rank");
  }
  if (has_layout) {
    try {
      out.layout = parse_json_strict(sd.metadata.at("orthotron.layout"), "metadata 'orthotron.layout'");
    } catch (const FormatError& e) {
      fail(e.what());
    }
    if (!out.layout->is_object()) fail("metadata 'orthotron.layout' must be a JSON object");
    if (check_layout) check_layout(*out.layout);
  }

  // 2. Sections and groups.
  for (auto it = state.begin(); it != state.end(); ++it) {
    if (it.key() != "muon" && it.key() != "adamw") fail("unknown section '" + it.key() + "' in 'orthotron.state'");
  }
  std::set<std::string> present;
  for (const char* section : kSections) {
    if (!state.contains(section)) {
      problem(std::string("the '") + section + "' section is missing from the state dict");
      continue;
    }
    const auto& sec = state[section];
    if (!sec.is_object() || !sec.contains("groups") || !sec["groups"].is_object() || !sec.contains("params") ||
        !sec["params"].is_object()) {
      fail(std::string("the '") + section + "' section must be an object with 'groups' and 'params' objects");
    }
    present.insert(section);
    for (const auto& g : groups) {
      if (state_section(g.algorithm) != std::string(section)) continue;
      if (!sec["groups"].contains(g.name)) {
        // Stored under the other algorithm?
        const char* other = g.algorithm == Algorithm::kMuon ? "adamw" : "muon";
        if (state.contains(other) && state[other].is_object() && state[other].contains("groups") &&
            state[other]["groups"].is_object() && state[other]["groups"].contains(g.name)) {
          fail("group '" + g.name + "' is " + other + " in the state dict but " + to_string(g.algorithm) + " here");
        }
        problem("group '" + g.name + "' is missing from the '" + section + "' section");
        continue;
      }
      const ParamGroup stored = group_from_json(g.name, sec["groups"][g.name]);
      if (stored.algorithm != g.algorithm) {
        fail("group '" + g.name + "' is " + to_string(stored.algorithm) + " in the state dict but " +
             to_string(g.algorithm) + " here");
      }
      note_hyperparameter_changes(stored, g, out.report);
    }
    for (auto it = sec["groups"].begin(); it != sec["groups"].end(); ++it) {
      const bool known = std::any_of(groups.begin(), groups.end(), [&](const ParamGroup& g) {
        return g.name == it.key() && state_section(g.algorithm) == std::string(section);
      });
      if (!known) problem("unexpected group '" + it.key() + "' in the '" + section + "' section");
    }
  }

  // 3. Parameters.
  std::set<std::string> used_tensors;
  std::map<std::string, std::set<std::string>> expected_names;
  for (size_t i = 0; i < expected.size(); ++i) {
    const ExpectedParam& e = expected[i];
    const std::string section = state_section(e.algorithm);
    expected_names[section].insert(e.name);
    if (!present.count(section)) continue;  // reported with the section
    const auto& params = state[section]["params"];
    if (!params.contains(e.name)) {
      const std::string other = e.algorithm == Algorithm::kMuon ? "adamw" : "muon";
      if (present.count(other) && state[other]["params"].contains(e.name)) {
        problem("parameter '" + e.name + "' was optimized by " + other + " in the state dict but is routed to " +
                section + " here");
      } else {
        problem("parameter '" + e.name + "' is missing from the '" + section + "' section");
      }
      continue;
    }
    const auto& entry = params[e.name];
    const std::string label = "parameter '" + e.name + "'";
    if (!entry.is_object()) fail(label + " entry must be an object, got " + json_type_name(entry));
    for (auto it = entry.begin(); it != entry.end(); ++it) {
      if (std::find(kEntryKeys.begin(), kEntryKeys.end(), it.key()) == kEntryKeys.end()) {
        fail(label + " entry has unknown field '" + it.key() + "'");
      }
    }
    for (const char* key : {"group", "step", "shape", "dtype"}) {
      if (!entry.contains(key)) fail(label + " entry has no '" + key + "'");
    }
    if (!entry["group"].is_string()) fail(label + " entry 'group' must be a string");
    if (!entry["dtype"].is_string()) fail(label + " entry 'dtype' must be a string");
    DecodedParam d{i, stored_step(entry["step"], e.name), {}};
    const std::string group = entry["group"].get<std::string>();
    if (group != e.group) {
      problem(label + " was in group '" + group + "' in the state dict but is routed to group '" + e.group + "' here");
      continue;
    }
    const auto shape = stored_ints(entry["shape"], label + " shape");
    if (shape != e.shape) {
      problem(label + " has shape " + shape_str(shape) + " in the state dict, " + shape_str(e.shape) + " here");
      continue;
    }
    // The entry's dtype is the stored tensors' (checked below); one that differs from the live
    // dtype is converted where that is lossless (convert_losslessly).
    const std::string dtype = entry["dtype"].get<std::string>();
    std::optional<std::array<int64_t, 2>> range;
    if (entry.contains("range")) {
      const auto r = stored_ints(entry["range"], label + " range");
      if (r.size() != 2) fail(label + " range must hold 2 integers");
      range = std::array<int64_t, 2>{r[0], r[1]};
    }
    if (range != e.range) {
      auto show = [](const std::optional<std::array<int64_t, 2>>& x) {
        return x ? "[" + std::to_string((*x)[0]) + ", " + std::to_string((*x)[1]) + ")" : std::string("whole");
      };
      problem(label + " holds element range " + show(range) + " in the state dict, " + show(e.range) + " here");
      continue;
    }
    std::vector<int64_t> want = e.shape;
    if (e.range) want = {(*e.range)[1] - (*e.range)[0]};
    const auto& slots = state_slots(e.algorithm);
    size_t found = 0;
    bool ok = true;
    for (const auto& slot : slots) {
      const std::string key = tensor_key(section, e.name, slot);
      auto t = sd.tensors.find(key);
      if (t == sd.tensors.end()) continue;
      ++found;
      used_tensors.insert(key);
      if (!t->second.sizes().equals(want)) {
        problem("tensor '" + key + "' is " + c10::toString(t->second.scalar_type()) + c10::str(t->second.sizes()) +
                ", expected " + c10::toString(e.dtype) + shape_str(want));
        ok = false;
        continue;
      }
      if (safetensors_dtype_name(t->second.scalar_type()) != dtype) {
        fail(label + " has dtype " + dtype + " in the state dict but its tensor '" + key + "' is " +
             c10::toString(t->second.scalar_type()));
      }
      check_values(t->second, key, slot == "exp_avg_sq");
      d.tensors.push_back(convert_losslessly(t->second, e.dtype, key));
      if (t->second.scalar_type() != e.dtype) {
        out.report.converted.push_back("tensor '" + key + "': " + c10::toString(t->second.scalar_type()) + " -> " +
                                       c10::toString(e.dtype) + ", lossless");
      }
    }
    if (!ok) continue;
    if (found != 0 && found != slots.size()) {
      fail(label + " has only " + std::to_string(found) + " of its " + std::to_string(slots.size()) + " state tensors");
    }
    if (d.step == 0 && found != 0) fail(label + " has step 0 but holds state tensors");
    if (d.step > 0 && found == 0) {
      problem(label + " has taken " + std::to_string(d.step) + " steps but its state tensors are missing");
      continue;
    }
    out.params.push_back(std::move(d));
  }
  for (const auto& section : present) {
    const auto& params = state[section]["params"];
    for (auto it = params.begin(); it != params.end(); ++it) {
      if (!expected_names[section].count(it.key())) {
        problem("unexpected parameter '" + it.key() + "' in the '" + section + "' section");
      }
    }
  }
  for (const auto& [key, tensor] : sd.tensors) {
    if (!used_tensors.count(key)) problem("unexpected tensor '" + key + "' in the state dict");
  }
  return out;
}

}  // namespace orthotron
