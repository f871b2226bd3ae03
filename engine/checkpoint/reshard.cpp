// reshard.cpp: which old shards a rank needs at a new world size, and its shard assembled from them.
#include "engine/checkpoint/reshard.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "base/errors.h"

namespace orthotron {

using Json = nlohmann::json;

namespace {

std::string hex16(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

/// The spelling of DistributedMuonWithAdamW's layout record (std::hex, no padding).
std::string hex_plain(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string shape_str(const std::vector<int64_t>& s) {
  return c10::str(at::IntArrayRef(s));
}

/// The old shard's parsed "orthotron.state", per old rank (parsed once).
class OldStates {
 public:
  explicit OldStates(const std::map<int, SafetensorsContent>& sources) : sources_(sources) {}
  const SafetensorsContent& shard(int r) const {
    auto it = sources_.find(r);
    if (it == sources_.end())
      throw FormatError("resharding: the shard of old rank " + std::to_string(r) + " was not read");
    return it->second;
  }
  const Json& state(int r) {
    auto it = parsed_.find(r);
    if (it != parsed_.end()) return it->second;
    const auto& meta = shard(r).metadata;
    auto m = meta.find("orthotron.state");
    if (m == meta.end())
      throw FormatError("resharding: the shard of old rank " + std::to_string(r) + " has no 'orthotron.state'");
    Json j;
    try {
      j = Json::parse(m->second);
    } catch (const Json::exception& e) {
      throw FormatError("resharding: the 'orthotron.state' of old rank " + std::to_string(r) +
                        " is not JSON: " + e.what());
    }
    return parsed_[r] = std::move(j);
  }
  /// The entry of `name` in `section` of old rank r's state.
  const Json& entry(int r, const std::string& section, const std::string& name) {
    const Json& s = state(r);
    if (!s.contains(section) || !s[section].contains("params") || !s[section]["params"].contains(name)) {
      throw FormatError("resharding: the shard of old rank " + std::to_string(r) + " has no " + section +
                        " state entry for parameter '" + name + "'");
    }
    return s[section]["params"][name];
  }
  /// A tensor of old rank r's shard (undefined when absent and !required).
  at::Tensor tensor(int r, const std::string& key, bool required) const {
    const auto& t = shard(r).tensors;
    auto it = t.find(key);
    if (it == t.end()) {
      if (required)
        throw FormatError("resharding: the shard of old rank " + std::to_string(r) + " has no tensor '" + key + "'");
      return at::Tensor();
    }
    return it->second;
  }

 private:
  const std::map<int, SafetensorsContent>& sources_;
  std::map<int, Json> parsed_;
};

}  // namespace

SavedLayout parse_saved_layout(const Json& layout, const std::string& where) {
  auto bad = [&](const std::string& what) -> FormatError {
    return FormatError("'" + where + "': layout record " + what);
  };
  SavedLayout out;
  if (!layout.is_object()) throw bad("is not an object");
  for (const char* key : {"world_size", "shard_len"}) {
    if (!layout.contains(key) || !layout[key].is_number_integer())
      throw bad(std::string("field '") + key + "' is missing or not an integer");
  }
  if (!layout.contains("plan_hash") || !layout["plan_hash"].is_string())
    throw bad("field 'plan_hash' is missing or not a string");
  out.world = layout["world_size"].get<int>();
  out.shard_len = layout["shard_len"].get<int64_t>();
  out.plan_hash = layout["plan_hash"].get<std::string>();
  if (out.world < 1) throw bad("world_size " + std::to_string(out.world) + " is below 1");
  const Json& owners = layout.contains("owners") ? layout["owners"] : Json();
  const Json& ranges = layout.contains("adamw_ranges") ? layout["adamw_ranges"] : Json();
  if (!owners.is_object() || !ranges.is_object()) throw bad("needs 'owners' and 'adamw_ranges' objects");
  for (auto it = owners.begin(); it != owners.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int>() < 0 || it.value().get<int>() >= out.world) {
      throw bad("owner of '" + it.key() + "' is " + it.value().dump() + ", expected a rank below " +
                std::to_string(out.world));
    }
    out.owners[it.key()] = it.value().get<int>();
  }
  for (auto it = ranges.begin(); it != ranges.end(); ++it) {
    if (!it.value().is_array()) throw bad("ranges of '" + it.key() + "' are not a list");
    for (const Json& r : it.value()) {
      if (!r.is_array() || r.size() != 3 || !r[0].is_number_integer() || !r[1].is_number_integer() ||
          !r[2].is_number_integer()) {
        throw bad("range " + r.dump() + " of '" + it.key() + "' is not [rank, begin, end]");
      }
      const std::array<int64_t, 3> v{r[0].get<int64_t>(), r[1].get<int64_t>(), r[2].get<int64_t>()};
      if (v[0] < 0 || v[0] >= out.world || v[1] < 0 || v[2] <= v[1]) {
        throw bad("range " + r.dump() + " of '" + it.key() + "' is out of bounds");
      }
      out.adamw_ranges[it.key()].push_back(v);
    }
  }
  return out;
}

SavedLayout layout_of(const OwnerPlan& plan) {
  SavedLayout out;
  out.world = plan.world;
  out.plan_hash = hex_plain(plan.hash);
  out.shard_len = plan.shard_len;
  for (const auto& s : plan.segments) {
    const std::string& name = plan.params[s.param].name;
    if (plan.owner[s.param] >= 0) {
      out.owners[name] = s.rank;
    } else {
      out.adamw_ranges[name].push_back({s.rank, s.param_begin, s.param_begin + s.count});
    }
  }
  return out;
}

std::string describe_plan_mismatch(const SavedLayout& saved, const std::string& saved_plan_hash, const OwnerPlan& plan,
                                   const std::function<std::vector<int64_t>(const std::string&, int)>& muon_shape) {
  const OwnerPlan old = make_owner_plan(plan.params, saved.world);
  if (hex16(old.hash) == saved_plan_hash) return "";
  std::set<std::string> mine;
  for (size_t i = 0; i < plan.params.size(); ++i) {
    const PlanParam& p = plan.params[i];
    mine.insert(p.name);
    const bool muon = plan.owner[i] >= 0;
    const bool was_muon = saved.owners.count(p.name) != 0, was_adamw = saved.adamw_ranges.count(p.name) != 0;
    if (!was_muon && !was_adamw) {
      // An empty AdamW parameter has no run; it is no mismatch by itself.
      if (p.numel() == 0 && !muon) continue;
      return "parameter '" + p.name + "' is not in the checkpoint";
    }
    if (muon != was_muon) {
      return "parameter '" + p.name + "' was " + (was_muon ? "muon" : "adamw") +
             " in the checkpoint but is routed to " + (muon ? "muon" : "adamw") + " here";
    }
    if (muon) {
      const std::vector<int64_t> got = muon_shape(p.name, saved.owners.at(p.name));
      if (got != p.shape) {
        return "parameter '" + p.name + "' has shape " + shape_str(got) + " in the checkpoint, this model's is " +
               shape_str(p.shape);
      }
    } else {
      int64_t n = 0;
      for (const auto& r : saved.adamw_ranges.at(p.name)) n += r[2] - r[1];
      if (n != p.numel()) {
        return "parameter '" + p.name + "' has " + std::to_string(n) +
               " elements in the checkpoint, this model's has shape " + shape_str(p.shape) + " (" +
               std::to_string(p.numel()) + " elements)";
      }
    }
  }
  for (const auto& [name, r] : saved.owners) {
    if (!mine.count(name)) return "parameter '" + name + "' is in the checkpoint but not in this model";
  }
  for (const auto& [name, r] : saved.adamw_ranges) {
    if (!mine.count(name)) return "parameter '" + name + "' is in the checkpoint but not in this model";
  }
  return "the checkpoint's owner plan " + saved_plan_hash + " (at data-parallel size " + std::to_string(saved.world) +
         ") differs from this model's plan at that size, " + hex16(old.hash) +
         ", although every parameter name and shape matches (groups, routing or splits differ)";
}

std::vector<int> reshard_sources(const SavedLayout& saved, const OwnerPlan& plan, int rank) {
  std::set<int> out;
  for (const auto& s : plan.shard_segments(rank)) {
    const std::string& name = plan.params[s.param].name;
    if (plan.owner[s.param] >= 0) {
      auto it = saved.owners.find(name);
      if (it == saved.owners.end()) throw FormatError("resharding: the layout record has no owner for '" + name + "'");
      out.insert(it->second);
      continue;
    }
    auto it = saved.adamw_ranges.find(name);
    if (it == saved.adamw_ranges.end())
      throw FormatError("resharding: the layout record has no ranges for '" + name + "'");
    for (const auto& r : it->second) {
      if (std::max(r[1], s.param_begin) < std::min(r[2], s.param_begin + s.count)) out.insert(static_cast<int>(r[0]));
    }
  }
  if (out.empty()) out.insert(0);  // the groups and format metadata come from an old shard
  return {out.begin(), out.end()};
}

ReshardedShard assemble_reshard(const SavedLayout& saved, const std::map<int, SafetensorsContent>& sources,
                                const OwnerPlan& plan, int rank) {
  OldStates old(sources);
  ReshardedShard out;
  const int head = reshard_sources(saved, plan, rank).front();
  Json state = old.state(head);
  for (const char* section : {"muon", "adamw"}) {
    if (state.contains(section) && state[section].is_object()) state[section]["params"] = Json::object();
  }
  for (const char* key : {"orthotron.format", "orthotron.format_version", "orthotron.optimizer"}) {
    auto it = old.shard(head).metadata.find(key);
    if (it != old.shard(head).metadata.end()) out.state.metadata[key] = it->second;
  }
  for (const auto& s : plan.shard_segments(rank)) {
    const std::string& name = plan.params[s.param].name;
    if (plan.owner[s.param] >= 0) {
      const int o = saved.owners.at(name);
      out.model[name] = old.tensor(o, "model/" + name, true);
      state["muon"]["params"][name] = old.entry(o, "muon", name);
      const std::string key = "muon/" + name + "/momentum";
      const at::Tensor m = old.tensor(o, key, false);
      if (m.defined()) out.state.tensors[key] = m;
      continue;
    }
    // An AdamW run [b, e): the overlapping pieces of the old runs, in element order.
    const int64_t b = s.param_begin, e = s.param_begin + s.count;
    const std::vector<std::string> slots = {"exp_avg", "exp_avg_sq"};
    std::vector<at::Tensor> model_pieces;
    std::vector<std::vector<at::Tensor>> state_pieces(slots.size());
    Json entry;
    int with_state = -1;  // unknown, 0 none, 1 all
    for (const auto& r : saved.adamw_ranges.at(name)) {
      const int64_t lo = std::max(b, r[1]), hi = std::min(e, r[2]);
      if (lo >= hi) continue;
      const int src = static_cast<int>(r[0]);
      const std::string where = "resharding: old rank " + std::to_string(src) + ", parameter '" + name + "'";
      const Json& ent = old.entry(src, "adamw", name);
      if (entry.is_null()) {
        entry = ent;
      } else if (ent.value("step", Json()) != entry.value("step", Json())) {
        throw FormatError(where + ": step " + ent.value("step", Json()).dump() + ", another old rank says " +
                          entry.value("step", Json()).dump());
      }
      auto piece = [&](const std::string& key, bool required) {
        const at::Tensor t = old.tensor(src, key, required);
        if (!t.defined()) return t;
        if (t.dim() != 1 || t.numel() != r[2] - r[1]) {
          throw FormatError(where + ": tensor '" + key + "' has shape " + c10::str(t.sizes()) + ", its range [" +
                            std::to_string(r[1]) + ", " + std::to_string(r[2]) + ") needs " +
                            std::to_string(r[2] - r[1]) + " elements");
        }
        return t.narrow(0, lo - r[1], hi - lo);
      };
      model_pieces.push_back(piece("model/" + name, true));
      std::vector<at::Tensor> st;
      for (const auto& slot : slots) st.push_back(piece("adamw/" + name + "/" + slot, false));
      const int has = st[0].defined() && st[1].defined() ? 1 : (!st[0].defined() && !st[1].defined() ? 0 : 2);
      if (has == 2 || (with_state >= 0 && has != with_state)) {
        throw FormatError(where + ": its AdamW moments are present on some old ranks or slots and absent on others");
      }
      with_state = has;
      for (size_t k = 0; k < slots.size(); ++k) state_pieces[k].push_back(st[k]);
    }
    int64_t got = 0;
    for (const auto& p : model_pieces) got += p.numel();
    if (got != s.count) {
      throw FormatError("resharding: the old ranges of '" + name + "' cover " + std::to_string(got) +
                        " of the elements [" + std::to_string(b) + ", " + std::to_string(e) + ")");
    }
    out.model[name] = at::cat(model_pieces).contiguous();
    entry["range"] = {b, e};
    state["adamw"]["params"][name] = entry;
    if (with_state == 1) {
      for (size_t k = 0; k < slots.size(); ++k) {
        out.state.tensors["adamw/" + name + "/" + slots[k]] = at::cat(state_pieces[k]).contiguous();
      }
    }
  }
  out.state.metadata["orthotron.state"] = state.dump();
  const SavedLayout mine = layout_of(plan);
  Json owners = Json::object(), ranges = Json::object();
  for (const auto& [name, r] : mine.owners) owners[name] = r;
  for (const auto& [name, rs] : mine.adamw_ranges) {
    for (const auto& r : rs) ranges[name].push_back({r[0], r[1], r[2]});
  }
  const Json layout = {{"world_size", plan.world},    {"rank", rank},     {"plan_hash", mine.plan_hash},
                       {"shard_len", plan.shard_len}, {"owners", owners}, {"adamw_ranges", ranges}};
  out.state.metadata["orthotron.layout"] = layout.dump();
  return out;
}

}  // namespace orthotron
