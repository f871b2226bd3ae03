// reshard.cpp: which old shards a rank of a new grid needs, and its shard assembled from them.
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

std::string shape_str(const std::vector<int64_t>& s) {
  return c10::str(at::IntArrayRef(s));
}

/// The old TP ranks whose pieces make up the logical parameter i of `old_plan`: only rank 0 when
/// it is replicated (or there is no TP), else all.
std::vector<int> pieces_of(const GridPlan& old_plan, size_t i) {
  if (old_plan.tp == 1 || old_plan.shard[i].cut == TpCut::kReplicated) return {0};
  std::vector<int> out(static_cast<size_t>(old_plan.tp));
  for (int t = 0; t < old_plan.tp; ++t) out[static_cast<size_t>(t)] = t;
  return out;
}

/// Whether rank t of the new grid holds exactly the old piece t of parameter i.
bool same_piece(const GridPlan& old_plan, const GridPlan& plan, size_t i) {
  return old_plan.tp == plan.tp && (plan.tp == 1 || old_plan.shard[i] == plan.shard[i]);
}

/// The old shards' content, per old grid rank, with each "orthotron.state" parsed once.
class OldGrid {
 public:
  OldGrid(const SavedLayout& saved, const GridPlan& old_plan, const std::map<int, SafetensorsContent>& sources)
      : saved_(saved), old_(old_plan), sources_(sources) {}

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

  /// An AdamW parameter's flat elements [b, e) of old TP piece t, in element order, for the value
  /// ("model/<name>") and both moments; its state entry (steps agreeing across the old runs).
  /// moments are empty when no old run has them (FormatError when only some do).
  struct AdamWRange {
    at::Tensor value;
    std::vector<at::Tensor> moments;
    Json entry;
  };
  AdamWRange adamw_range(const std::string& name, int t, int64_t b, int64_t e) {
    const std::vector<std::string> slots = {"exp_avg", "exp_avg_sq"};
    std::vector<at::Tensor> values;
    std::vector<std::vector<at::Tensor>> moments(slots.size());
    AdamWRange out;
    int with_state = -1;  // unknown, 0 none, 1 all
    for (const auto& r : saved_.adamw_ranges.at(name)) {
      const int64_t lo = std::max(b, r[1]), hi = std::min(e, r[2]);
      if (lo >= hi) continue;
      const int src = saved_.grid_rank(t, static_cast<int>(r[0]));
      const std::string where = "resharding: old rank " + std::to_string(src) + ", parameter '" + name + "'";
      const Json& ent = entry(src, "adamw", name);
      if (out.entry.is_null()) {
        out.entry = ent;
      } else if (ent.value("step", Json()) != out.entry.value("step", Json())) {
        throw FormatError(where + ": step " + ent.value("step", Json()).dump() + ", another old rank says " +
                          out.entry.value("step", Json()).dump());
      }
      auto piece = [&](const std::string& key, bool required) {
        const at::Tensor x = tensor(src, key, required);
        if (!x.defined()) return x;
        if (x.dim() != 1 || x.numel() != r[2] - r[1]) {
          throw FormatError(where + ": tensor '" + key + "' has shape " + c10::str(x.sizes()) + ", its range [" +
                            std::to_string(r[1]) + ", " + std::to_string(r[2]) + ") needs " +
                            std::to_string(r[2] - r[1]) + " elements");
        }
        return x.narrow(0, lo - r[1], hi - lo);
      };
      values.push_back(piece("model/" + name, true));
      std::vector<at::Tensor> st;
      for (const auto& slot : slots) st.push_back(piece("adamw/" + name + "/" + slot, false));
      const int has = st[0].defined() && st[1].defined() ? 1 : (!st[0].defined() && !st[1].defined() ? 0 : 2);
      if (has == 2 || (with_state >= 0 && has != with_state)) {
        throw FormatError(where + ": its AdamW moments are present on some old ranks or slots and absent on others");
      }
      with_state = has;
      for (size_t k = 0; k < slots.size(); ++k) moments[k].push_back(st[k]);
    }
    int64_t got = 0;
    for (const auto& v : values) got += v.numel();
    if (got != e - b) {
      throw FormatError("resharding: the old ranges of '" + name + "' (TP piece " + std::to_string(t) + ") cover " +
                        std::to_string(got) + " of the elements [" + std::to_string(b) + ", " + std::to_string(e) +
                        ")");
    }
    out.value = at::cat(values).contiguous();
    if (with_state == 1) {
      for (auto& m : moments) out.moments.push_back(at::cat(m).contiguous());
    }
    return out;
  }

  /// An AdamW parameter's logical value and moments (moments empty when never stepped), from every
  /// old piece of it, and its state entry.
  AdamWRange adamw_logical(size_t i) {
    const std::string& name = old_.logical[i].name;
    const std::vector<int64_t>& piece_shape = old_.dp.params[i].shape;
    const int64_t n = old_.dp.params[i].numel();
    std::vector<at::Tensor> values;
    std::vector<std::vector<at::Tensor>> moments(2);
    AdamWRange out;
    for (int t : pieces_of(old_, i)) {
      AdamWRange piece = adamw_range(name, t, 0, n);
      if (t > 0 && piece.moments.size() != out.moments.size()) {
        throw FormatError("resharding: parameter '" + name +
                          "': its AdamW moments are present on some old TP ranks and absent on others");
      }
      if (t == 0) out = piece;
      values.push_back(piece.value.view(piece_shape));
      for (size_t k = 0; k < piece.moments.size(); ++k) moments[k].push_back(piece.moments[k].view(piece_shape));
    }
    out.value = tp_assemble(values, old_.shard[i]);
    out.moments.clear();
    for (auto& m : moments) {
      if (!m.empty()) out.moments.push_back(tp_assemble(m, old_.shard[i]));
    }
    return out;
  }

  /// A Muon parameter's old piece t (from its old DP owner's shard).
  at::Tensor muon_piece(size_t i, int t) {
    const std::string& name = old_.logical[i].name;
    return tensor(saved_.grid_rank(t, owner(i)), "model/" + name, true);
  }
  /// A Muon parameter's logical value, from its old pieces.
  at::Tensor muon_logical(size_t i) {
    std::vector<at::Tensor> pieces;
    for (int t : pieces_of(old_, i)) pieces.push_back(muon_piece(i, t));
    return tp_assemble(pieces, old_.shard[i]);
  }
  /// The old rank holding a Muon parameter's state entry (its TP owner, or TP rank `t` when local).
  int muon_holder(size_t i, int t) const { return saved_.grid_rank(old_.gathered[i] ? old_.tp_owner[i] : t, owner(i)); }
  /// A Muon parameter's logical momentum (undefined before its first step): kept whole by its old
  /// TP owner, or per piece on every old TP rank (all present or all absent).
  at::Tensor muon_logical_momentum(size_t i) {
    const std::string key = "muon/" + old_.logical[i].name + "/momentum";
    if (old_.gathered[i]) return tensor(muon_holder(i, 0), key, false);
    std::vector<at::Tensor> pieces;
    for (int t : pieces_of(old_, i)) pieces.push_back(tensor(muon_holder(i, t), key, false));
    const auto present = std::count_if(pieces.begin(), pieces.end(), [](const at::Tensor& x) { return x.defined(); });
    if (present == 0) return at::Tensor();
    if (present != static_cast<long>(pieces.size())) {
      throw FormatError("resharding: the momentum of '" + old_.logical[i].name +
                        "' is present on some old TP ranks and absent on others");
    }
    return tp_assemble(pieces, old_.shard[i]);
  }
  int owner(size_t i) const {
    auto it = saved_.owners.find(old_.logical[i].name);
    if (it == saved_.owners.end())
      throw FormatError("resharding: the layout record has no owner for '" + old_.logical[i].name + "'");
    return it->second;
  }

 private:
  const SavedLayout& saved_;
  const GridPlan& old_;
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
  if (layout.contains("shard_layout")) {
    const Json& kind = layout["shard_layout"];
    if (!kind.is_string() || (kind != "owner_aligned" && kind != "element_wise"))
      throw bad("field 'shard_layout' is " + kind.dump() + ", expected \"owner_aligned\" or \"element_wise\"");
    out.shard_layout = kind.get<std::string>();
  }
  if (layout.contains("bucket_elements")) {
    if (!layout["bucket_elements"].is_number_integer() || layout["bucket_elements"].get<int64_t>() < 0)
      throw bad("field 'bucket_elements' is " + layout["bucket_elements"].dump() + ", expected an integer >= 0");
    out.bucket_elements = layout["bucket_elements"].get<int64_t>();
  }
  if (layout.contains("tensor_parallel")) {
    if (!layout["tensor_parallel"].is_number_integer() || layout["tensor_parallel"].get<int>() < 1)
      throw bad("field 'tensor_parallel' is " + layout["tensor_parallel"].dump() + ", expected an integer >= 1");
    out.tp = layout["tensor_parallel"].get<int>();
  }
  if (out.tp > 1) {
    const Json& cuts = layout.contains("tp_cuts") ? layout["tp_cuts"] : Json();
    const Json& tp_owners = layout.contains("tp_owners") ? layout["tp_owners"] : Json();
    if (!cuts.is_object() || !tp_owners.is_object())
      throw bad("at tensor_parallel > 1 needs 'tp_cuts' and 'tp_owners'");
    for (auto it = cuts.begin(); it != cuts.end(); ++it) {
      const Json& c = it.value();
      TpShard s;
      const std::string kind =
          c.is_object() && c.contains("cut") && c["cut"].is_string() ? c["cut"].get<std::string>() : "";
      if (kind == "rows") {
        s.cut = TpCut::kRows;
      } else if (kind == "columns") {
        s.cut = TpCut::kColumns;
      } else {
        throw bad("cut of '" + it.key() + "' is " + c.dump() + ", expected {\"cut\": \"rows\" or \"columns\", ...}");
      }
      if (!c.contains("blocks") || !c["blocks"].is_number_integer() || c["blocks"].get<int64_t>() < 1)
        throw bad("cut of '" + it.key() + "' needs an integer 'blocks' >= 1");
      s.blocks = c["blocks"].get<int64_t>();
      out.cuts[it.key()] = s;
    }
    for (auto it = tp_owners.begin(); it != tp_owners.end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<int>() < 0 || it.value().get<int>() >= out.tp) {
        throw bad("tensor-parallel owner of '" + it.key() + "' is " + it.value().dump() + ", expected a rank below " +
                  std::to_string(out.tp));
      }
      out.tp_owners[it.key()] = it.value().get<int>();
    }
  }
  return out;
}

SavedLayout layout_of(const GridPlan& plan) {
  return parse_saved_layout(layout_record(plan), "(layout_of)");
}

GridPlan saved_grid_plan(const SavedLayout& saved, const GridPlan& job, const SplitRegistry& splits) {
  TensorParallelLayout layout;
  layout.size = saved.tp;
  layout.shards = saved.cuts;
  return make_grid_plan(job.logical, splits, layout, saved.world, 0, saved.shard_layout, saved.bucket_elements);
}

std::string describe_plan_mismatch(const SavedLayout& saved, const std::string& saved_plan_hash, const GridPlan& job,
                                   const SplitRegistry& splits,
                                   const std::function<std::vector<int64_t>(const std::string&, int)>& muon_shape) {
  std::string old_hash = "(none: this model cannot be planned on that grid)";
  try {
    old_hash = hex16(saved_grid_plan(saved, job, splits).hash);
    if (old_hash == saved_plan_hash) return "";
  } catch (const Error&) {
    // Named below by the parameter that differs.
  }
  const std::string grid = saved.tp > 1 ? "tensor-parallel size " + std::to_string(saved.tp) +
                                              " x data-parallel size " + std::to_string(saved.world)
                                        : "data-parallel size " + std::to_string(saved.world);
  auto cut_of = [&](const std::string& name) {
    auto it = saved.cuts.find(name);
    return it == saved.cuts.end() ? TpShard{} : it->second;
  };
  std::set<std::string> mine;
  for (const PlanParam& p : job.logical) {
    mine.insert(p.name);
    const bool muon = p.algorithm == Algorithm::kMuon;
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
    const TpShard cut = cut_of(p.name);
    if (muon) {
      const std::vector<int64_t> piece = muon_shape(p.name, saved.grid_rank(0, saved.owners.at(p.name)));
      std::vector<int64_t> got = piece;
      try {
        got = tp_logical_shape(p.name, piece, cut, saved.tp);
      } catch (const Error&) {
        // A piece without the cut dimension: report it as it is.
      }
      if (got != p.shape) {
        return "parameter '" + p.name + "' has shape " + shape_str(got) + " in the checkpoint, this model's is " +
               shape_str(p.shape);
      }
    } else {
      int64_t n = 0;
      for (const auto& r : saved.adamw_ranges.at(p.name)) n += r[2] - r[1];
      if (cut.cut != TpCut::kReplicated) n *= saved.tp;
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
  return "the checkpoint's owner plan " + saved_plan_hash + " (at " + grid +
         ") differs from this model's plan there, " + old_hash +
         ", although every parameter name and shape matches (groups, routing or splits differ)";
}

std::vector<int> reshard_sources(const SavedLayout& saved, const GridPlan& old_plan, const GridPlan& plan,
                                 int dp_rank) {
  std::set<int> out;
  const int me = plan.tp_rank;
  for (const auto& s : plan.dp.holdings(dp_rank)) {
    const size_t i = s.param;
    const std::string& name = plan.logical[i].name;
    const bool same = same_piece(old_plan, plan, i);
    if (plan.dp.owner[i] >= 0) {
      auto it = saved.owners.find(name);
      if (it == saved.owners.end()) throw FormatError("resharding: the layout record has no owner for '" + name + "'");
      const int d = it->second;
      if (same) {
        out.insert(saved.grid_rank(me, d));
      } else {
        for (int t : pieces_of(old_plan, i)) out.insert(saved.grid_rank(t, d));
      }
      if (!plan.keeps_state(i)) continue;
      if (old_plan.gathered[i]) {
        out.insert(saved.grid_rank(old_plan.tp_owner[i], d));
      } else if (!(same && !plan.gathered[i])) {
        for (int t : pieces_of(old_plan, i)) out.insert(saved.grid_rank(t, d));
      }
      continue;
    }
    auto it = saved.adamw_ranges.find(name);
    if (it == saved.adamw_ranges.end())
      throw FormatError("resharding: the layout record has no ranges for '" + name + "'");
    for (const auto& r : it->second) {
      if (same) {
        if (std::max(r[1], s.param_begin) < std::min(r[2], s.param_begin + s.count))
          out.insert(saved.grid_rank(me, static_cast<int>(r[0])));
      } else {
        for (int t : pieces_of(old_plan, i)) out.insert(saved.grid_rank(t, static_cast<int>(r[0])));
      }
    }
  }
  if (out.empty()) out.insert(0);  // the groups and format metadata come from an old shard
  return {out.begin(), out.end()};
}

ReshardedShard assemble_reshard(const SavedLayout& saved, const GridPlan& old_plan,
                                const std::map<int, SafetensorsContent>& sources, const GridPlan& plan, int dp_rank) {
  OldGrid old(saved, old_plan, sources);
  ReshardedShard out;
  const int me = plan.tp_rank;
  const int head = reshard_sources(saved, old_plan, plan, dp_rank).front();
  Json state = old.state(head);
  for (const char* section : {"muon", "adamw"}) {
    if (state.contains(section) && state[section].is_object()) state[section]["params"] = Json::object();
  }
  for (const char* key : {"orthotron.format", "orthotron.format_version", "orthotron.optimizer"}) {
    auto it = old.shard(head).metadata.find(key);
    if (it != old.shard(head).metadata.end()) out.state.metadata[key] = it->second;
  }
  // Rank `me`'s piece of a logical tensor under the new cut.
  auto new_piece = [&](const at::Tensor& logical, size_t i) { return tp_piece(logical, plan.shard[i], me, plan.tp); };
  for (const auto& s : plan.dp.holdings(dp_rank)) {
    const size_t i = s.param;
    const std::string& name = plan.logical[i].name;
    const bool same = same_piece(old_plan, plan, i);
    const std::vector<int64_t>& piece_shape = plan.dp.params[i].shape;
    if (plan.dp.owner[i] >= 0) {
      out.model[name] = same ? old.muon_piece(i, me) : new_piece(old.muon_logical(i), i);
      if (!plan.keeps_state(i)) continue;
      Json entry = old.entry(old.muon_holder(i, same ? me : 0), "muon", name);
      entry["shape"] = plan.gathered[i] ? plan.logical[i].shape : piece_shape;
      state["muon"]["params"][name] = entry;
      const std::string key = "muon/" + name + "/momentum";
      at::Tensor m;
      if (same && !old_plan.gathered[i] && !plan.gathered[i]) {
        m = old.tensor(old.muon_holder(i, me), key, false);  // the same piece's momentum
      } else {
        m = old.muon_logical_momentum(i);
        if (m.defined() && !plan.gathered[i]) m = new_piece(m, i);
      }
      if (m.defined()) out.state.tensors[key] = m.contiguous();
      continue;
    }
    // An AdamW run [b, e) of this rank's piece.
    const int64_t b = s.param_begin, e = s.param_begin + s.count;
    OldGrid::AdamWRange run;
    if (same) {
      run = old.adamw_range(name, me, b, e);
    } else {
      run = old.adamw_logical(i);
      auto cut = [&](const at::Tensor& logical) { return new_piece(logical, i).reshape(-1).narrow(0, b, e - b); };
      run.value = cut(run.value);
      for (auto& m : run.moments) m = cut(m);
    }
    out.model[name] = run.value.contiguous();
    run.entry["range"] = {b, e};
    run.entry["shape"] = piece_shape;
    state["adamw"]["params"][name] = run.entry;
    if (!run.moments.empty()) {
      out.state.tensors["adamw/" + name + "/exp_avg"] = run.moments[0].contiguous();
      out.state.tensors["adamw/" + name + "/exp_avg_sq"] = run.moments[1].contiguous();
    }
  }
  out.state.metadata["orthotron.state"] = state.dump();
  Json layout = layout_record(plan);
  layout["rank"] = dp_rank;
  if (plan.tp > 1) layout["tp_rank"] = me;
  out.state.metadata["orthotron.layout"] = layout.dump();
  return out;
}

}  // namespace orthotron
