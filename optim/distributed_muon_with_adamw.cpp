// distributed_muon_with_adamw.cpp: construction (plan + hash check), the sharded step, and the
// per-rank state dict.
#include "optim/distributed_muon_with_adamw.h"

#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "base/debug_checks.h"
#include "base/errors.h"
#include "optim/muon_batch.h"
#include "optim/ns_audit.h"
#include "optim/optimizer_state.h"

namespace orthotron {

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
  assignment_ = route_parameters(logical_shapes(params_), groups_, rules);
  check_split_routing(assignment_, groups_, splits_);
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

std::map<std::string, at::Tensor> DistributedMuonWithAdamW::parameter_shard() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& s : my_segments_) {
    const at::Tensor& p = params_[s.param].tensor;
    out[params_[s.param].name] = plan_.owner[s.param] >= 0
                                     ? p.detach().clone()
                                     : p.detach().reshape(-1).narrow(0, s.param_begin, s.count).clone();
  }
  return out;
}

void DistributedMuonWithAdamW::load_parameter_shard(const std::map<std::string, at::Tensor>& shard) {
  std::string error;
  std::map<std::string, at::Tensor> converted;  // in the live dtype
  for (const auto& s : my_segments_) {
    const std::string& name = params_[s.param].name;
    const at::Tensor& p = params_[s.param].tensor;
    auto it = shard.find(name);
    const std::vector<int64_t> expected = plan_.owner[s.param] >= 0 ? p.sizes().vec() : std::vector<int64_t>{s.count};
    if (it == shard.end()) {
      error = "load_parameter_shard: parameter '" + name + "' is missing from this rank's shard";
    } else if (it->second.sizes().vec() != expected) {
      error = "load_parameter_shard: parameter '" + name + "' has shape " + c10::str(it->second.sizes()) + " " +
              c10::toString(it->second.scalar_type()) + ", expected " + c10::str(at::IntArrayRef(expected)) + " " +
              c10::toString(p.scalar_type());
    } else {
      try {
        converted[name] = convert_losslessly(it->second, p.scalar_type(), "model/" + name);
      } catch (const StateDictError& e) {
        error = std::string("load_parameter_shard: ") + e.what();
      }
    }
    if (!error.empty()) break;
  }
  if (error.empty() && shard.size() != my_segments_.size()) {
    for (const auto& [name, t] : shard) {
      if (!index_.count(name) || std::none_of(my_segments_.begin(), my_segments_.end(),
                                              [&](const PlanSegment& s) { return s.param == index_.at(name); })) {
        error = "load_parameter_shard: parameter '" + name + "' is not held by this rank (or not a parameter)";
        break;
      }
    }
  }
  at::Tensor failed = at::full({1}, error.empty() ? 0 : 1, at::TensorOptions().dtype(at::kLong).device(dp_.device()));
  dp_.all_reduce(failed, ReduceOp::kMax);
  if (failed.cpu().item<int64_t>() != 0) {
    throw StateDictError(error.empty() ? "load_parameter_shard failed on another data-parallel rank (see its message)"
                                       : error + " [rank " + std::to_string(dp_.rank()) + "]");
  }
  c10::NoGradGuard no_grad;
  const int64_t base = static_cast<int64_t>(dp_.rank()) * plan_.shard_len;
  for (const auto& s : my_segments_) {
    param_shard_.narrow(0, s.buffer_offset - base, s.count)
        .copy_(converted.at(params_[s.param].name).reshape(-1).to(param_shard_.device()));
  }
  gather_shards_into_params();
}

void DistributedMuonWithAdamW::step() {
  c10::NoGradGuard no_grad;
  const size_t n = params_.size();
  // 1. Which parameters have a gradient anywhere (a parameter without one on every rank is skipped).
  at::Tensor flags = at::zeros({static_cast<int64_t>(n)}, at::kLong);
  std::vector<char> has_local(n, 0);
  for (size_t i = 0; i < n; ++i) {
    check_logical_shape(assignment_[i], params_[i].tensor);
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

  // Global gradient norm: each averaged element sits in exactly one shard (padding is zero).
  const double local = at::linalg_vector_norm(shard_grad, 2).item<double>();
  at::Tensor sumsq = at::full({1}, local * local, at::TensorOptions().dtype(at::kDouble)).to(dp_.device());
  dp_.all_reduce(sumsq, ReduceOp::kSum);
  const double clip = begin_clipped_step(std::sqrt(sumsq.cpu().item<double>()));
  if (last_step_skipped()) return;  // the same decision on every rank: the norm is global
  if (clip < 1.0) shard_grad.mul_(clip);

  // 3. Update this rank's shard: Muon on owned matrices, AdamW on the element run.
  load_shard_from_params();
  const int64_t base = static_cast<int64_t>(dp_.rank()) * plan_.shard_len;
  std::vector<MuonTask> tasks;
  std::vector<size_t> stepped_muon;
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
    // The shard slice is flat: the matrix view takes the parameter's logical shape from the plan.
    const c10::IntArrayRef shape(plan_.params[i].shape);
    at::Tensor& m = momentum_[i];
    if (!m.defined()) m = at::zeros(shape, p.options());
    tasks.push_back({p.view(shape), muon_momentum_direction(grad.view(shape), m, g.muon), splits_.find(params_[i].name),
                     assignment_[i].group_index, &g.muon, params_[i].name});
    stepped_muon.push_back(i);
  }
  last_ns_counts_ = apply_muon_tasks(tasks);
  if (debug_checks_enabled()) {
    check_ns_counts(expected_ns_counts(plan_.params, stepped_muon), last_ns_counts_, groups_,
                    "DistributedMuonWithAdamW::step on rank " + std::to_string(dp_.rank()));
  }

  // 4. Every rank receives every updated parameter.
  gather_shards_into_params();
  for (size_t i = 0; i < n; ++i) steps_[i] += any[i] ? 1 : 0;
}

StateDict DistributedMuonWithAdamW::state_dict() const {
  nlohmann::json owners = nlohmann::json::object(), ranges = nlohmann::json::object();
  for (const auto& s : plan_.segments) {
    const std::string& name = params_[s.param].name;
    if (plan_.owner[s.param] >= 0) {
      owners[name] = s.rank;
    } else {
      ranges[name].push_back({s.rank, s.param_begin, s.param_begin + s.count});
    }
  }
  std::vector<StateEntry> entries;
  for (const auto& s : my_segments_) {
    const size_t i = s.param;
    const ParamGroup& g = groups_[assignment_[i].group_index];
    StateEntry e;
    e.name = params_[i].name;
    e.algorithm = g.algorithm;
    e.group = g.name;
    e.step = steps_[i];
    e.shape = params_[i].tensor.sizes().vec();
    e.dtype = params_[i].tensor.scalar_type();
    if (g.algorithm == Algorithm::kMuon) {
      if (momentum_.count(i)) e.tensors = {momentum_.at(i)};
    } else {
      e.range = std::array<int64_t, 2>{s.param_begin, s.param_begin + s.count};
      if (adamw_.count(i) && adamw_.at(i).exp_avg.defined())
        e.tensors = {adamw_.at(i).exp_avg, adamw_.at(i).exp_avg_sq};
    }
    entries.push_back(std::move(e));
  }
  const nlohmann::json layout = {{"world_size", plan_.world},    {"rank", dp_.rank()}, {"plan_hash", hex(plan_.hash)},
                                 {"shard_len", plan_.shard_len}, {"owners", owners},   {"adamw_ranges", ranges}};
  return encode_optimizer_state(groups_, entries, layout);
}

namespace {

/// An integer field of the layout record; StateDictError naming it when absent or of another type.
int64_t layout_int(const nlohmann::json& layout, const char* key) {
  if (!layout.contains(key) || !layout[key].is_number_integer()) {
    throw StateDictError(std::string("load_state_dict: layout record field '") + key +
                         "' is missing or not an integer");
  }
  return layout[key].get<int64_t>();
}

}  // namespace

LoadReport DistributedMuonWithAdamW::load_state_dict(const StateDict& sd, const LoadOptions& options) {
  DecodedState decoded;
  std::string error;
  try {
    std::vector<ExpectedParam> expected;
    for (const auto& s : my_segments_) {
      const size_t i = s.param;
      const ParamGroup& g = groups_[assignment_[i].group_index];
      ExpectedParam e{
          params_[i].name, g.algorithm, g.name, params_[i].tensor.sizes().vec(), params_[i].tensor.scalar_type(),
          std::nullopt};
      if (g.algorithm == Algorithm::kAdamW) e.range = std::array<int64_t, 2>{s.param_begin, s.param_begin + s.count};
      expected.push_back(std::move(e));
    }
    auto check_layout = [&](const nlohmann::json& layout) {
      const int64_t saved_world = layout_int(layout, "world_size");
      if (saved_world != plan_.world) {
        throw StateDictError("load_state_dict: state saved at data-parallel world size " + std::to_string(saved_world) +
                             ", this job runs " + std::to_string(plan_.world) +
                             " (resuming at another world size is not supported yet)");
      }
      if (!layout.contains("plan_hash") || !layout["plan_hash"].is_string()) {
        throw StateDictError("load_state_dict: layout record field 'plan_hash' is missing or not a string");
      }
      if (layout["plan_hash"].get<std::string>() != hex(plan_.hash)) {
        throw StateDictError("load_state_dict: state saved with owner plan " + layout["plan_hash"].get<std::string>() +
                             ", this job's plan is " + hex(plan_.hash) +
                             " (parameter names, shapes, routing or splits differ)");
      }
      const int64_t saved_rank = layout_int(layout, "rank");
      if (saved_rank != dp_.rank()) {
        throw StateDictError("load_state_dict: this state belongs to rank " + std::to_string(saved_rank) +
                             " but was offered to rank " + std::to_string(dp_.rank()));
      }
    };
    decoded = decode_optimizer_state(sd, groups_, expected, /*expect_layout=*/true, options, check_layout);
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
  for (auto& d : decoded.params) {
    const size_t i = my_segments_[d.expected].param;
    steps_[i] = d.step;
    auto restore = [&](size_t k) { return d.tensors[k].to(dp_.device(), /*non_blocking=*/false, /*copy=*/true); };
    if (groups_[assignment_[i].group_index].algorithm == Algorithm::kMuon) {
      if (d.tensors.empty()) {
        momentum_.erase(i);
      } else {
        momentum_[i] = restore(0);
      }
    } else if (d.tensors.empty()) {
      adamw_.erase(i);
    } else {
      adamw_[i].exp_avg = restore(0);
      adamw_[i].exp_avg_sq = restore(1);
    }
  }
  // Step counters of parameters held elsewhere: every rank keeps them, so take them from the holders.
  at::Tensor steps = at::zeros({static_cast<int64_t>(params_.size())}, at::kLong);
  for (const auto& s : my_segments_) {
    if (s.param_begin == 0) steps[static_cast<int64_t>(s.param)] = steps_[s.param];
  }
  at::Tensor steps_dev = steps.to(dp_.device());
  dp_.all_reduce(steps_dev, ReduceOp::kMax);
  steps = steps_dev.cpu();
  for (size_t i = 0; i < params_.size(); ++i) steps_[i] = steps[static_cast<int64_t>(i)].item<int64_t>();
  sync_parameters();
  return decoded.report;
}

}  // namespace orthotron
