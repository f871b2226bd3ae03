// distributed_muon_with_adamw.cpp: construction (plan + hash check), the sharded step, and the
// per-rank state dict.
#include "optim/distributed_muon_with_adamw.h"

#include <c10/core/GradMode.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "optim/group_json.h"
#include "optim/muon_batch.h"
#include "optim/safetensors.h"
#include "optim/state_header.h"
#include "parallel/errors.h"

namespace orthotron {

std::string rank_state_path(const std::string& path, int rank, int world) {
  char suffix[64];
  std::snprintf(suffix, sizeof suffix, ".rank%05d-of-%05d", rank, world);
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return path + suffix;
  return path.substr(0, dot) + suffix + path.substr(dot);
}

namespace {

std::string hex(uint64_t v) {
  std::ostringstream out;
  out << std::hex << v;
  return out.str();
}

}  // namespace

DistributedMuonWithAdamW::DistributedMuonWithAdamW(NamedParameters params, Communicator& dp,
                                                   std::vector<ParamGroup> groups, std::vector<RoutingRule> rules,
                                                   SplitRegistry splits)
    : dp_(dp), params_(std::move(params)), groups_(std::move(groups)), splits_(std::move(splits)) {
  validate_groups(groups_);
  assignment_ = route_parameters(params_, groups_, rules);
  check_split_routing(params_, assignment_, groups_, splits_);
  if (params_.empty()) throw InvalidArgument("DistributedMuonWithAdamW needs at least one parameter");
  const at::ScalarType dtype = params_[0].tensor.scalar_type();
  for (const auto& p : params_) {
    if (p.tensor.scalar_type() != dtype || p.tensor.device() != dp_.device() || !p.tensor.is_contiguous()) {
      throw InvalidArgument("DistributedMuonWithAdamW: parameter '" + p.name + "' is " +
                            c10::toString(p.tensor.scalar_type()) + " on " + p.tensor.device().str() +
                            (p.tensor.is_contiguous() ? "" : ", non-contiguous") + "; every parameter must be " +
                            c10::toString(dtype) + ", contiguous, on " + dp_.device().str());
    }
  }
  for (size_t i = 0; i < params_.size(); ++i) index_[params_[i].name] = i;
  steps_.assign(params_.size(), 0);
  plan_ = make_owner_plan(plan_params(assignment_, groups_, splits_), dp_.size());

  // Every rank must have built the same plan: compare hashes before any buffer-sized collective.
  at::Tensor hashes = at::empty({dp_.size()}, at::TensorOptions().dtype(at::kLong).device(dp_.device()));
  at::Tensor mine = at::full({1}, static_cast<int64_t>(plan_.hash), hashes.options());
  dp_.all_gather(hashes, mine);
  const at::Tensor all = hashes.cpu();
  for (int r = 0; r < dp_.size(); ++r) {
    if (all[r].item<int64_t>() != all[0].item<int64_t>()) {
      std::ostringstream msg;
      msg << "owner plan mismatch across data-parallel ranks (parameter names, shapes, routing or splits differ):";
      for (int q = 0; q < dp_.size(); ++q)
        msg << " rank " << q << " hash " << hex(static_cast<uint64_t>(all[q].item<int64_t>()));
      msg << "; this is rank " << dp_.rank() << " (" << plan_.summary() << ")";
      throw CommError(msg.str());
    }
  }
  const auto opts = params_[0].tensor.options().requires_grad(false);
  grad_buffer_ = at::zeros({plan_.buffer_len()}, opts);
  param_buffer_ = at::zeros({plan_.buffer_len()}, opts);
  param_shard_ = at::zeros({plan_.shard_len}, opts);
  my_segments_ = plan_.shard_segments(dp_.rank());
  sync_parameters();
}

ParamGroup& DistributedMuonWithAdamW::group(const std::string& name) {
  for (auto& g : groups_) {
    if (g.name == name) return g;
  }
  throw InvalidArgument("DistributedMuonWithAdamW has no group named '" + name + "'");
}

size_t DistributedMuonWithAdamW::index_of(const std::string& param) const {
  auto it = index_.find(param);
  if (it == index_.end()) throw InvalidArgument("DistributedMuonWithAdamW holds no parameter named '" + param + "'");
  return it->second;
}

at::Tensor DistributedMuonWithAdamW::muon_momentum(const std::string& param) const {
  auto it = momentum_.find(index_of(param));
  return it == momentum_.end() ? at::Tensor() : it->second;
}

int64_t DistributedMuonWithAdamW::step_count(const std::string& param) const {
  return steps_[index_of(param)];
}

void DistributedMuonWithAdamW::zero_grad() {
  for (auto& p : params_) {
    if (p.tensor.grad().defined()) p.tensor.mutable_grad() = at::Tensor();
  }
}

void DistributedMuonWithAdamW::load_shard_from_params() {
  const int64_t base = static_cast<int64_t>(dp_.rank()) * plan_.shard_len;
  for (const auto& s : my_segments_) {
    param_shard_.narrow(0, s.buffer_offset - base, s.count)
        .copy_(params_[s.param].tensor.view(-1).narrow(0, s.param_begin, s.count));
  }
}

void DistributedMuonWithAdamW::gather_shards_into_params() {
  dp_.all_gather(param_buffer_, param_shard_);
  for (const auto& s : plan_.segments) {
    params_[s.param]
        .tensor.view(-1)
        .narrow(0, s.param_begin, s.count)
        .copy_(param_buffer_.narrow(0, s.buffer_offset, s.count));
  }
}

void DistributedMuonWithAdamW::sync_parameters() {
  c10::NoGradGuard no_grad;
  load_shard_from_params();
  gather_shards_into_params();
}

void DistributedMuonWithAdamW::step() {
  c10::NoGradGuard no_grad;
  const size_t n = params_.size();
  // 1. Which parameters have a gradient anywhere (a parameter without one on every rank is skipped).
  at::Tensor flags = at::zeros({static_cast<int64_t>(n)}, at::kLong);
  std::vector<char> has_local(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor g = params_[i].tensor.grad();
    if (!g.defined()) continue;
    if (!g.sizes().equals(params_[i].tensor.sizes())) {
      throw ShapeError("parameter '" + params_[i].name + "': gradient shape " + c10::str(g.sizes()) +
                       " differs from parameter shape " + c10::str(params_[i].tensor.sizes()));
    }
    has_local[i] = 1;
    flags[static_cast<int64_t>(i)] = 1;
  }
  at::Tensor flags_dev = flags.to(dp_.device());
  dp_.all_reduce(flags_dev, ReduceOp::kMax);
  flags = flags_dev.cpu();
  std::vector<char> any(n, 0);
  for (size_t i = 0; i < n; ++i) any[i] = flags[static_cast<int64_t>(i)].item<int64_t>() != 0;

  // 2. Gradients into the flat buffer (zeros where this rank has none), averaged and scattered.
  grad_buffer_.zero_();
  for (const auto& s : plan_.segments) {
    if (!has_local[s.param]) continue;
    grad_buffer_.narrow(0, s.buffer_offset, s.count)
        .copy_(params_[s.param].tensor.grad().reshape(-1).narrow(0, s.param_begin, s.count));
  }
  at::Tensor shard_grad = at::empty({plan_.shard_len}, grad_buffer_.options());
  dp_.reduce_scatter(shard_grad, grad_buffer_, ReduceOp::kAvg);

  // 3. Update this rank's shard: Muon on owned matrices, AdamW on the element run.
  load_shard_from_params();
  const int64_t base = static_cast<int64_t>(dp_.rank()) * plan_.shard_len;
  std::vector<MuonTask> tasks;
  for (const auto& s : my_segments_) {
    if (!any[s.param]) continue;
    const size_t i = s.param;
    const ParamGroup& g = groups_[assignment_[i].group_index];
    at::Tensor p = param_shard_.narrow(0, s.buffer_offset - base, s.count);
    const at::Tensor grad = shard_grad.narrow(0, s.buffer_offset - base, s.count);
    if (g.algorithm == Algorithm::kAdamW) {
      AdamWState& st = adamw_[i];
      st.step = steps_[i];
      adamw_step(p, grad, st, g.adamw);
      continue;
    }
    const auto shape = params_[i].tensor.sizes();
    at::Tensor& m = momentum_[i];
    if (!m.defined()) m = at::zeros(shape, p.options());
    tasks.push_back({p.view(shape), muon_momentum_direction(grad.view(shape), m, g.muon), splits_.find(params_[i].name),
                     assignment_[i].group_index, &g.muon, params_[i].name});
  }
  apply_muon_tasks(tasks);

  // 4. Every rank receives every updated parameter.
  gather_shards_into_params();
  for (size_t i = 0; i < n; ++i) steps_[i] += any[i] ? 1 : 0;
}

StateDict DistributedMuonWithAdamW::state_dict() const {
  StateDict sd;
  nlohmann::json state = {{"muon", {{"groups", nlohmann::json::object()}, {"params", nlohmann::json::object()}}},
                          {"adamw", {{"groups", nlohmann::json::object()}, {"params", nlohmann::json::object()}}}};
  for (const auto& g : groups_) state[state_section(g.algorithm)]["groups"][g.name] = group_to_json(g);
  nlohmann::json owners = nlohmann::json::object(), ranges = nlohmann::json::object();
  for (const auto& s : plan_.segments) {
    const std::string& name = params_[s.param].name;
    if (plan_.owner[s.param] >= 0) {
      owners[name] = s.rank;
    } else {
      ranges[name].push_back({s.rank, s.param_begin, s.param_begin + s.count});
    }
  }
  for (const auto& s : my_segments_) {
    const size_t i = s.param;
    const ParamGroup& g = groups_[assignment_[i].group_index];
    const std::string& name = params_[i].name;
    nlohmann::json entry = {{"group", g.name},
                            {"step", steps_[i]},
                            {"shape", params_[i].tensor.sizes().vec()},
                            {"dtype", safetensors_dtype_name(params_[i].tensor.scalar_type())}};
    if (g.algorithm == Algorithm::kMuon) {
      if (momentum_.count(i)) sd.tensors["muon/" + name + "/momentum"] = momentum_.at(i);
    } else {
      entry["range"] = {s.param_begin, s.param_begin + s.count};
      if (adamw_.count(i) && adamw_.at(i).exp_avg.defined()) {
        sd.tensors["adamw/" + name + "/exp_avg"] = adamw_.at(i).exp_avg;
        sd.tensors["adamw/" + name + "/exp_avg_sq"] = adamw_.at(i).exp_avg_sq;
      }
    }
    state[state_section(g.algorithm)]["params"][name] = entry;
  }
  write_state_header(sd, state);
  const nlohmann::json layout = {{"world_size", plan_.world},    {"rank", dp_.rank()}, {"plan_hash", hex(plan_.hash)},
                                 {"shard_len", plan_.shard_len}, {"owners", owners},   {"adamw_ranges", ranges}};
  sd.metadata["orthotron.layout"] = layout.dump();
  return sd;
}

void DistributedMuonWithAdamW::save(const std::string& path) const {
  save_state_dict(state_dict(), rank_state_path(path, dp_.rank(), dp_.size()));
  dp_.barrier();
}

LoadReport DistributedMuonWithAdamW::load(const std::string& path, const LoadOptions& options) {
  StateDict sd;
  std::string read_error;
  try {
    sd = load_state_dict_file(rank_state_path(path, dp_.rank(), dp_.size()));
  } catch (const Error& e) {
    read_error = e.what();
  }
  // Agree on the outcome of reading before anything else is collective.
  at::Tensor failed =
      at::full({1}, read_error.empty() ? 0 : 1, at::TensorOptions().dtype(at::kLong).device(dp_.device()));
  dp_.all_reduce(failed, ReduceOp::kMax);
  if (failed.cpu().item<int64_t>() != 0) {
    throw StateDictError(read_error.empty() ? "load: another rank could not read its state file (see its message)"
                                            : read_error);
  }
  return load_state_dict(sd, options);
}

LoadReport DistributedMuonWithAdamW::load_state_dict(const StateDict& sd, const LoadOptions& options) {
  LoadReport report;
  std::string error;
  struct Pending {
    size_t param;
    int64_t steps;
    std::vector<at::Tensor> tensors;
  };
  std::vector<Pending> pending;
  std::vector<ParamGroup> new_groups = groups_;
  try {
    auto problem = [&](const std::string& what) {
      if (!options.allow_partial) throw StateDictError("load_state_dict: " + what + " (pass allow_partial to skip it)");
      report.skipped.push_back(what);
    };
    const nlohmann::json state = read_state_header(sd);
    nlohmann::json layout;
    try {
      layout = nlohmann::json::parse(state_metadata(sd, "orthotron.layout"));
    } catch (const nlohmann::json::exception& e) {
      throw StateDictError(std::string("load_state_dict: 'orthotron.layout' is not valid JSON: ") + e.what());
    } catch (const StateDictError&) {
      throw StateDictError(
          "load_state_dict: the state dict has no 'orthotron.layout' record: it was saved by the single-process "
          "MuonWithAdamW, not by a data-parallel rank");
    }
    const int saved_world = layout.value("world_size", -1);
    if (saved_world != plan_.world) {
      throw StateDictError("load_state_dict: state saved at data-parallel world size " + std::to_string(saved_world) +
                           ", this job runs " + std::to_string(plan_.world) +
                           " (resuming at another world size is not supported yet)");
    }
    if (layout.value("plan_hash", std::string()) != hex(plan_.hash)) {
      throw StateDictError("load_state_dict: state saved with owner plan " +
                           layout.value("plan_hash", std::string("?")) + ", this job's plan is " + hex(plan_.hash) +
                           " (parameter names, shapes, routing or splits differ)");
    }
    if (layout.value("rank", -1) != dp_.rank()) {
      throw StateDictError("load_state_dict: this state belongs to rank " + std::to_string(layout.value("rank", -1)) +
                           " but was offered to rank " + std::to_string(dp_.rank()));
    }
    std::set<std::string> used;
    for (const char* section : {"muon", "adamw"}) {
      if (!state.contains(section) || !state[section].contains("params")) {
        problem(std::string("the '") + section + "' section is missing from the state dict");
        continue;
      }
      const auto& sec = state[section];
      restore_groups(sec, section, new_groups, problem);
      std::set<std::string> expected;
      for (const auto& s : my_segments_) {
        const size_t i = s.param;
        if (state_section(groups_[assignment_[i].group_index].algorithm) != std::string(section)) continue;
        const std::string& name = params_[i].name;
        expected.insert(name);
        if (!sec["params"].contains(name)) {
          problem("parameter '" + name + "' is missing from the '" + section + "' section");
          continue;
        }
        const auto& entry = sec["params"][name];
        Pending p{i, 0, {}};
        try {
          p.steps = entry.at("step").get<int64_t>();
          if (!params_[i].tensor.sizes().equals(entry.at("shape").get<std::vector<int64_t>>())) {
            problem("parameter '" + name + "' has another shape in the state dict");
            continue;
          }
          if (entry.contains("range") && entry["range"] != nlohmann::json({s.param_begin, s.param_begin + s.count})) {
            problem("parameter '" + name + "' has element range " + entry["range"].dump() + " in the state dict, [" +
                    std::to_string(s.param_begin) + ", " + std::to_string(s.param_begin + s.count) + "] here");
            continue;
          }
        } catch (const nlohmann::json::exception& e) {
          throw StateDictError("load_state_dict: entry of parameter '" + name + "' is malformed: " + e.what());
        }
        const bool muon = std::string(section) == "muon";
        const std::vector<int64_t> want = muon ? params_[i].tensor.sizes().vec() : std::vector<int64_t>{s.count};
        for (const char* slot :
             muon ? std::vector<const char*>{"momentum"} : std::vector<const char*>{"exp_avg", "exp_avg_sq"}) {
          const std::string key = std::string(section) + "/" + name + "/" + slot;
          auto t = sd.tensors.find(key);
          if (t == sd.tensors.end()) {
            if (p.steps > 0) problem("tensor '" + key + "' is missing");
            continue;
          }
          used.insert(key);
          if (!t->second.sizes().equals(want) || t->second.scalar_type() != params_[i].tensor.scalar_type()) {
            problem("tensor '" + key + "' is " + c10::toString(t->second.scalar_type()) + c10::str(t->second.sizes()) +
                    ", expected " + c10::toString(params_[i].tensor.scalar_type()) + c10::str(c10::IntArrayRef(want)));
            continue;
          }
          p.tensors.push_back(t->second);
        }
        pending.push_back(std::move(p));
      }
      for (auto it = sec["params"].begin(); it != sec["params"].end(); ++it) {
        if (!expected.count(it.key()))
          problem("unexpected parameter '" + it.key() + "' in the '" + section + "' section");
      }
    }
    for (const auto& [key, tensor] : sd.tensors) {
      if (!used.count(key)) problem("unexpected tensor '" + key + "' in the state dict");
    }
  } catch (const Error& e) {
    error = e.what();
  }
  // Every rank learns whether any rank failed, so nobody proceeds into the re-sync alone.
  at::Tensor failed = at::full({1}, error.empty() ? 0 : 1, at::TensorOptions().dtype(at::kLong).device(dp_.device()));
  dp_.all_reduce(failed, ReduceOp::kMax);
  if (failed.cpu().item<int64_t>() != 0) {
    throw StateDictError(error.empty() ? "load_state_dict failed on another data-parallel rank (see its message)"
                                       : error + " [rank " + std::to_string(dp_.rank()) + "]");
  }
  c10::NoGradGuard no_grad;
  groups_ = std::move(new_groups);
  for (auto& p : pending) {
    steps_[p.param] = p.steps;
    const bool muon = groups_[assignment_[p.param].group_index].algorithm == Algorithm::kMuon;
    if (muon) {
      if (p.tensors.size() == 1) momentum_[p.param] = p.tensors[0].to(dp_.device(), false, true);
    } else if (p.tensors.size() == 2) {
      adamw_[p.param].exp_avg = p.tensors[0].to(dp_.device(), false, true);
      adamw_[p.param].exp_avg_sq = p.tensors[1].to(dp_.device(), false, true);
    }
  }
  // Step counters of parameters held elsewhere: every rank keeps them, so take them from the layout's owners.
  at::Tensor steps = at::zeros({static_cast<int64_t>(params_.size())}, at::kLong);
  for (const auto& s : my_segments_) {
    if (s.param_begin == 0) steps[static_cast<int64_t>(s.param)] = steps_[s.param];
  }
  at::Tensor steps_dev = steps.to(dp_.device());
  dp_.all_reduce(steps_dev, ReduceOp::kMax);
  steps = steps_dev.cpu();
  for (size_t i = 0; i < params_.size(); ++i) steps_[i] = steps[static_cast<int64_t>(i)].item<int64_t>();
  sync_parameters();
  return report;
}

}  // namespace orthotron
