// distributed_muon_with_adamw.cpp: construction (plan + hash check), the sharded step, and the
// per-rank state dict.
#include "optim/distributed_muon_with_adamw.h"

#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <sstream>

#include "base/debug_checks.h"
#include "base/errors.h"
#include "optim/element_plan.h"
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

namespace {

/// CommError naming every rank's hash unless all ranks of `comm` hold the same `hash`. Collective.
void check_hash_agrees(Communicator& comm, uint64_t hash, const std::string& summary) {
  at::Tensor hashes = at::empty({comm.size()}, at::TensorOptions().dtype(at::kLong).device(comm.device()));
  at::Tensor mine = at::full({1}, static_cast<int64_t>(hash), hashes.options());
  comm.all_gather(hashes, mine);
  const at::Tensor all = hashes.cpu();
  for (int r = 0; r < comm.size(); ++r) {
    if (all[r].item<int64_t>() != all[0].item<int64_t>()) {
      std::ostringstream msg;
      msg << "owner plan mismatch across " << (comm.name() == "tp" ? "tensor" : "data") << "-parallel ranks "
          << "(parameter names, shapes, routing, splits or the tensor-parallel layout differ):";
      for (int q = 0; q < comm.size(); ++q)
        msg << " rank " << q << " hash " << hex(static_cast<uint64_t>(all[q].item<int64_t>()));
      msg << "; this is rank " << comm.rank() << " of '" << comm.name() << "' (" << summary << ")";
      throw CommError(msg.str());
    }
  }
}

}  // namespace

DistributedMuonWithAdamW::DistributedMuonWithAdamW(NamedParameters params, Communicator& dp,
                                                   std::vector<ParamGroup> groups, std::vector<RoutingRule> rules,
                                                   SplitRegistry splits, TensorParallelContext tp,
                                                   const std::string& shard_layout)
    : dp_(dp),
      tp_(std::move(tp)),
      params_(std::move(params)),
      groups_(std::move(groups)),
      splits_(std::move(splits)),
      shard_layout_(shard_layout) {
  validate_groups(groups_);
  if (tp_.comm == nullptr) tp_.layout = TensorParallelLayout{};
  tp_.layout.size = tp_.size();
  std::vector<ParamShape> shapes = logical_shapes(params_);
  for (auto& s : shapes) s.shape = tp_logical_shape(s.name, s.shape, tp_.layout.of(s.name), tp_.size());
  assignment_ = route_parameters(shapes, groups_, rules);
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
  adopt_plan(plan_for_buckets(0));
  set_bucket_bytes(0);
  sync_parameters();
}

GridPlan DistributedMuonWithAdamW::plan_for_buckets(int64_t bucket_bytes) const {
  return make_grid_plan(plan_params(assignment_, groups_, splits_), splits_, tp_.layout, dp_.size(), tp_.rank(),
                        shard_layout_,
                        element_bucket_elements(bucket_bytes, static_cast<int64_t>(params_[0].tensor.element_size())));
}

void DistributedMuonWithAdamW::adopt_plan(GridPlan grid) {
  grid_ = std::move(grid);
  plan_ = grid_.dp;
  audit_params_ = plan_.params;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (grid_.gathered[i]) audit_params_[i] = grid_.logical[i];
  }
  // Every rank must have built the same plan: compare hashes before any buffer-sized collective.
  check_hash_agrees(dp_, grid_.hash, grid_.summary());
  if (tp_.comm != nullptr) check_hash_agrees(*tp_.comm, grid_.hash, grid_.summary());
  const auto opts = params_[0].tensor.options().requires_grad(false);
  grad_buffer_ = at::zeros({plan_.buffer_len()}, opts);
  param_buffer_ = at::zeros({plan_.buffer_len()}, opts);
  param_shard_ = at::zeros({plan_.shard_len}, opts);
  shard_grad_ = at::zeros({plan_.shard_len}, opts);
  my_segments_ = plan_.shard_segments(dp_.rank());
  holdings_ = plan_.holdings(dp_.rank());
}

bool DistributedMuonWithAdamW::keeps_state(size_t i) const {
  return grid_.keeps_state(i);
}

const ParamSplit* DistributedMuonWithAdamW::split_for(size_t i) const {
  auto it = grid_.local_splits.find(params_[i].name);
  return it != grid_.local_splits.end() ? &it->second : splits_.find(params_[i].name);
}

int64_t DistributedMuonWithAdamW::state_elements() const {
  if (tp_.size() == 1) return plan_.state_elements(dp_.rank());
  int64_t n = 0;
  for (const auto& s : holdings_) {
    if (plan_.owner[s.param] < 0) {
      n += 2 * s.count;
    } else if (keeps_state(s.param)) {
      n += grid_.gathered[s.param] ? grid_.logical[s.param].numel() : s.count;
    }
  }
  return n;
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
  discard_backward_reduction();
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
  std::vector<WorkPtr> works;
  for (int64_t k = 0; k < buckets_.count(); ++k) works.push_back(post_gather(k));
  for (int64_t k = 0; k < buckets_.count(); ++k) {
    works[static_cast<size_t>(k)]->wait();
    unpack_bucket(k);
  }
}

WorkPtr DistributedMuonWithAdamW::post_gather(int64_t k) {
  at::Tensor span = param_buffer_.narrow(0, buckets_.span_begin(k), buckets_.span_len(k));
  return dp_.iall_gather(span, param_shard_.narrow(0, buckets_.begin(k), buckets_.len(k)));
}

void DistributedMuonWithAdamW::unpack_bucket(int64_t k) {
  for (const auto& piece : pieces_[static_cast<size_t>(k)]) {
    if (params_[piece.param].tensor.data_ptr() == alias_[piece.param]) continue;  // the all-gather wrote it
    params_[piece.param]
        .tensor.view(-1)
        .narrow(0, piece.param_begin, piece.count)
        .copy_(param_buffer_.narrow(0, piece.physical, piece.count));
  }
}

void DistributedMuonWithAdamW::set_bucket_bytes(int64_t bytes) {
  discard_backward_reduction();  // its buckets were the old ones
  if (shard_layout_ != "owner_aligned") {
    // Layout B's cut follows its buckets (element_plan.h); under auto the choice may move too.
    GridPlan next = plan_for_buckets(bytes);
    if (next.hash != grid_.hash) {
      const bool stepped = std::any_of(steps_.begin(), steps_.end(), [](int64_t n) { return n > 0; });
      if (stepped || !momentum_.empty() || !adamw_.empty()) {
        throw InvalidArgument("set_bucket_bytes(" + std::to_string(bytes) + ") under shard layout " + shard_layout_ +
                              " re-cuts the shards (layout B's cut follows its buckets), which would move the "
                              "optimizer state; set it before the first step or state load");
      }
      adopt_plan(std::move(next));  // collective: the hash check
      load_shard_from_params();     // the parameters are already equal on every rank
    }
  }
  buckets_ = element_wise() ? shard_buckets_at(dp_.size(), plan_.bucket_bounds)
                            : make_shard_buckets(dp_.size(), plan_.shard_len, bytes,
                                                 static_cast<int64_t>(params_[0].tensor.element_size()));
  pieces_.assign(static_cast<size_t>(buckets_.count()), {});
  for (const auto& seg : plan_.segments) buckets_.cut(seg, pieces_);
  param_buckets_.assign(params_.size(), {});
  for (int64_t k = 0; k < buckets_.count(); ++k) {
    for (const auto& piece : pieces_[static_cast<size_t>(k)]) {
      auto& in = param_buckets_[piece.param];
      if (in.empty() || in.back() != k) in.push_back(k);
    }
  }
  muon_segments_.assign(static_cast<size_t>(buckets_.count()) + 1, {});
  for (const auto& seg : plan_.segments) {  // layout B's exchanges only
    if (!element_wise() || plan_.owner[seg.param] < 0 || param_buckets_[seg.param].empty()) continue;
    muon_segments_[static_cast<size_t>(param_buckets_[seg.param].front())].push_back(&seg);
    muon_segments_.back().push_back(&seg);
  }
  owned_params_.assign(static_cast<size_t>(buckets_.count()) + 1, {});
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!element_wise() || plan_.owner[i] != dp_.rank() || param_buckets_[i].empty()) continue;
    owned_params_[static_cast<size_t>(param_buckets_[i].front())].push_back(i);
    owned_params_.back().push_back(i);
  }
  // The pieces move with the bucket size: the padding between them must be zero again (step()
  // writes only pieces).
  if (grad_buffer_.defined()) grad_buffer_.zero_();
  alias_parameters();
}

void DistributedMuonWithAdamW::alias_parameters() {
  alias_.assign(params_.size(), nullptr);
  if (tp_.size() > 1) return;
  // A parameter aliases the buffer where its pieces are one run of it: under layout B always (each
  // parameter lies in one bucket, whose span is the backward order); under layout A unless a bucket
  // boundary of its owner's shard cuts it (the pieces then sit in two buckets' spans).
  std::vector<int64_t> start(params_.size(), -1);
  for (const auto& pieces : pieces_) {
    for (const auto& piece : pieces) {
      if (piece.param_begin == 0) start[piece.param] = piece.physical;
    }
  }
  std::vector<char> one_run(params_.size(), 1);
  for (const auto& pieces : pieces_) {
    for (const auto& piece : pieces) {
      if (piece.physical == start[piece.param] + piece.param_begin) continue;
      if (element_wise()) {
        throw InvariantError("layout B: parameter '" + params_[piece.param].name + "' is not one run of the buffer (" +
                             "elements from " + std::to_string(piece.param_begin) + " at " +
                             std::to_string(piece.physical) + ", element 0 at " + std::to_string(start[piece.param]) +
                             ")");
      }
      one_run[piece.param] = 0;
    }
  }
  c10::NoGradGuard no_grad;
  // A parameter already in this buffer that must move (another bucket cut under layout A) moves by
  // copy, and the runs of two cuts may overlap: then every parameter moves into a fresh buffer.
  auto in_buffer = [&](const at::Tensor& p) { return p.storage().is_alias_of(param_buffer_.storage()); };
  auto run_of = [&](size_t i) {
    return static_cast<const char*>(param_buffer_.data_ptr()) + start[i] * param_buffer_.element_size();
  };
  bool moves = false;
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& p = params_[i].tensor;
    if (p.numel() > 0 && in_buffer(p) && (!one_run[i] || p.data_ptr() != run_of(i))) moves = true;
  }
  const c10::Storage old = param_buffer_.storage();
  if (moves) param_buffer_ = at::zeros_like(param_buffer_);  // the parameters keep the old one alive
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i].tensor;
    if (p.numel() == 0) continue;  // no piece, no run
    if (!one_run[i]) {             // cut by a bucket boundary: unpacked by copy, into storage of its own
      if (p.storage().is_alias_of(old)) p.set_(p.clone());
      continue;
    }
    if (p.data_ptr() != run_of(i)) param_buffer_.narrow(0, start[i], p.numel()).copy_(p.view(-1));
    p.set_(param_buffer_.storage(), param_buffer_.storage_offset() + start[i], p.sizes(), p.strides());
    alias_[i] = p.data_ptr();
  }
}

void DistributedMuonWithAdamW::sync_parameters() {
  c10::NoGradGuard no_grad;
  load_shard_from_params();
  gather_shards_into_params();
}

std::map<std::string, at::Tensor> DistributedMuonWithAdamW::parameter_shard() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& s : holdings_) {
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
  for (const auto& s : holdings_) {
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
  if (error.empty() && shard.size() != holdings_.size()) {
    for (const auto& [name, t] : shard) {
      if (!index_.count(name) || std::none_of(holdings_.begin(), holdings_.end(),
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
  std::vector<at::Tensor> owned;  // layout B: the whole matrices this rank owns, in parameter order
  for (const auto& s : holdings_) {
    const at::Tensor v = converted.at(params_[s.param].name).reshape(-1).to(param_shard_.device());
    if (element_wise() && plan_.owner[s.param] >= 0) {
      owned.push_back(v);
    } else {
      param_shard_.narrow(0, s.buffer_offset - base, s.count).copy_(v);
    }
  }
  if (element_wise()) {
    // Loading is not a step: its all-to-all wait stays out of the last step's times.
    const double step_wait_ms = last_times_.exchange_wait_ms;
    scatter_owned_values(owned);
    last_times_.exchange_wait_ms = step_wait_ms;
  }
  gather_shards_into_params();
}

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void add_ns_counts(NsCounts& total, const NsCounts& part) {
  for (const auto& [group, count] : part) {
    total[group].matrices += count.matrices;
    total[group].calls += count.calls;
  }
}

}  // namespace

void DistributedMuonWithAdamW::post_reduction(int64_t k) {
  at::Tensor span = grad_buffer_.narrow(0, buckets_.span_begin(k), buckets_.span_len(k));
  // Every piece is written (the gradient, or zeros where this rank has none); the padding between
  // pieces is never written and stays as zero as set_bucket_bytes left it.
  for (const auto& piece : pieces_[static_cast<size_t>(k)]) {
    at::Tensor slot = grad_buffer_.narrow(0, piece.physical, piece.count);
    const at::Tensor g = params_[piece.param].tensor.grad();
    if (g.defined()) {
      slot.copy_(g.reshape(-1).narrow(0, piece.param_begin, piece.count));
    } else {
      slot.zero_();
    }
  }
  at::Tensor out = shard_grad_.narrow(0, buckets_.begin(k), buckets_.len(k));
  reductions_.push_back(dp_.ireduce_scatter(out, span, ReduceOp::kAvg));
}

void DistributedMuonWithAdamW::post_reductions(bool all, double& pack_ms) {
  while (static_cast<int64_t>(reductions_.size()) < buckets_.count()) {
    const int64_t k = static_cast<int64_t>(reductions_.size());
    if (!all && waiting_[static_cast<size_t>(k)] > 0) break;
    const auto t0 = std::chrono::steady_clock::now();
    post_reduction(k);
    pack_ms += ms_since(t0);
    for (auto& w : reductions_) w->test();  // drive the buckets already in flight
  }
}

void DistributedMuonWithAdamW::begin_backward_reduction() {
  discard_backward_reduction();
  if (!dp_.device().is_cpu()) return;  // a CUDA parameter's hook runs on autograd's device thread
  armed_ = true;
  ready_.assign(params_.size(), 0);
  waiting_.assign(static_cast<size_t>(buckets_.count()), 0);
  for (const auto& in : param_buckets_) {
    for (int64_t k : in) ++waiting_[static_cast<size_t>(k)];
  }
  c10::NoGradGuard no_grad;
  post_reductions(/*all=*/false, backward_pack_ms_);  // buckets holding padding only
}

void DistributedMuonWithAdamW::gradient_ready(size_t i) {
  if (i >= params_.size()) {
    throw InvalidArgument("gradient_ready: parameter index " + std::to_string(i) + " out of range (" +
                          std::to_string(params_.size()) + " parameters)");
  }
  if (!armed_) return;
  if (ready_[i]) {
    const auto& in = param_buckets_[i];
    if (!in.empty() && in.front() < static_cast<int64_t>(reductions_.size())) {
      throw InvalidArgument("gradient_ready: the gradient of '" + params_[i].name +
                            "' was accumulated again after bucket " + std::to_string(in.front()) +
                            " holding it was packed; call begin_backward_reduction() right before the step's "
                            "last backward, not before an earlier micro-batch's");
    }
    return;
  }
  ready_[i] = 1;
  for (int64_t k : param_buckets_[i]) --waiting_[static_cast<size_t>(k)];
  c10::NoGradGuard no_grad;
  post_reductions(/*all=*/false, backward_pack_ms_);
}

void DistributedMuonWithAdamW::end_backward_reduction() {
  if (!armed_) return;
  armed_ = false;
  buckets_in_backward_ = static_cast<int64_t>(reductions_.size());
  c10::NoGradGuard no_grad;
  post_reductions(/*all=*/true, backward_pack_ms_);
}

void DistributedMuonWithAdamW::discard_backward_reduction() {
  armed_ = false;
  for (auto& w : reductions_) w->wait();
  reductions_.clear();
  buckets_in_backward_ = 0;
  backward_pack_ms_ = 0;
}

void DistributedMuonWithAdamW::step() {
  c10::NoGradGuard no_grad;
  const auto t_start = std::chrono::steady_clock::now();
  last_times_ = StepTimes{};
  last_times_.buckets = buckets_.count();
  const size_t n = params_.size();
  const bool tp = tp_.size() > 1;
  // 1. Which parameters have a gradient anywhere (a parameter without one on every rank is skipped).
  at::Tensor flags = at::zeros({static_cast<int64_t>(n)}, at::kLong);
  for (size_t i = 0; i < n; ++i) {
    if (!tp) {
      check_logical_shape(assignment_[i], params_[i].tensor);
    } else if (params_[i].tensor.sizes().vec() != plan_.params[i].shape) {
      throw ShapeError("parameter '" + params_[i].name + "' has shape " + c10::str(params_[i].tensor.sizes()) +
                       ", expected its tensor-parallel piece " + c10::str(at::IntArrayRef(plan_.params[i].shape)) +
                       " of logical shape " + c10::str(at::IntArrayRef(grid_.logical[i].shape)));
    }
    const at::Tensor g = params_[i].tensor.grad();
    if (!g.defined()) continue;
    if (!g.sizes().equals(params_[i].tensor.sizes())) {
      throw ShapeError("parameter '" + params_[i].name + "': gradient shape " + c10::str(g.sizes()) +
                       " differs from parameter shape " + c10::str(params_[i].tensor.sizes()));
    }
    flags[static_cast<int64_t>(i)] = 1;
  }
  // 2. Gradients into the flat buffer (zeros where this rank has none), averaged and scattered:
  // bucket by bucket, each bucket's reduce-scatter travelling while the next one is packed. Those
  // posted during backward (begin_backward_reduction) are already on their way.
  last_times_.buckets_in_backward = armed_ ? static_cast<int64_t>(reductions_.size()) : buckets_in_backward_;
  last_times_.backward_pack_ms = backward_pack_ms_;
  armed_ = false;
  buckets_in_backward_ = 0;
  backward_pack_ms_ = 0;
  post_reductions(/*all=*/true, last_times_.pack_ms);
  // The flags travel after every reduce-scatter is posted: on each rank the same collectives in the
  // same order, however many buckets backward posted.
  at::Tensor flags_dev = flags.to(dp_.device());
  dp_.all_reduce(flags_dev, ReduceOp::kMax);
  if (tp) tp_.comm->all_reduce(flags_dev, ReduceOp::kMax);
  flags = flags_dev.cpu();
  std::vector<char> any(n, 0);
  for (size_t i = 0; i < n; ++i) any[i] = flags[static_cast<int64_t>(i)].item<int64_t>() != 0;
  at::Tensor shard_grad = shard_grad_;  // fully written by the reduce-scatters
  {
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& w : reductions_) w->wait();
    reductions_.clear();
    last_times_.reduce_wait_ms = ms_since(t0);
  }

  // Global gradient norm: each averaged element sits in exactly one shard (padding is zero). With
  // TP, a parameter replicated across the TP ranks is counted on TP rank 0 only. The norm needs
  // every bucket: the clip factor and the skip of a non-finite step are global decisions.
  const auto t_norm = std::chrono::steady_clock::now();
  const int64_t base = static_cast<int64_t>(dp_.rank()) * plan_.shard_len;
  double local_sumsq = 0;
  if (!tp) {
    local_sumsq = squared_l2_norm(shard_grad);
  } else {
    for (const auto& s : my_segments_) {
      if (grid_.shard[s.param].cut == TpCut::kReplicated && tp_.rank() != 0) continue;
      local_sumsq += squared_l2_norm(shard_grad.narrow(0, s.buffer_offset - base, s.count));
    }
  }
  at::Tensor sumsq = at::full({1}, local_sumsq, at::TensorOptions().dtype(at::kDouble)).to(dp_.device());
  dp_.all_reduce(sumsq, ReduceOp::kSum);
  if (tp) tp_.comm->all_reduce(sumsq, ReduceOp::kSum);
  const double clip = begin_clipped_step(std::sqrt(sumsq.cpu().item<double>()));
  if (last_step_skipped()) return;  // the same decision on every rank: the norm is global
  if (clip < 1.0) shard_grad.mul_(clip);
  last_times_.norm_ms = ms_since(t_norm);

  // 3. Update this rank's shard: Muon on owned matrices, AdamW on the element run.
  const auto t_load = std::chrono::steady_clock::now();
  load_shard_from_params();
  last_times_.update_ms = ms_since(t_load);
  if (!element_wise() && !tp) {
    update_and_gather_in_buckets(any, shard_grad);  // 3 and 4, overlapped bucket by bucket
  } else if (!tp) {
    update_and_gather_element_wise_in_buckets(any, shard_grad);  // the same around the all-to-alls
  } else {
    update_gathered_or_element_wise(any, shard_grad);
    // 4. Every rank receives every updated parameter.
    const auto t0 = std::chrono::steady_clock::now();
    gather_shards_into_params();
    last_times_.gather_wait_ms = ms_since(t0);
  }
  for (size_t i = 0; i < n; ++i) steps_[i] += any[i] ? 1 : 0;
  last_times_.total_ms = ms_since(t_start);
}

bool DistributedMuonWithAdamW::update_segment(const PlanSegment& s, const at::Tensor& shard_grad,
                                              std::vector<MuonTask>& tasks, std::vector<size_t>& stepped) {
  const int64_t base = static_cast<int64_t>(dp_.rank()) * plan_.shard_len;
  const size_t i = s.param;
  const ParamGroup& g = groups_[assignment_[i].group_index];
  at::Tensor p = param_shard_.narrow(0, s.buffer_offset - base, s.count);
  const at::Tensor grad = shard_grad.narrow(0, s.buffer_offset - base, s.count);
  if (g.algorithm == Algorithm::kAdamW) {
    AdamWState& st = adamw_[i];
    st.step = steps_[i];
    adamw_step(p, grad, st, g.adamw);
    return true;
  }
  if (element_wise() || grid_.gathered[i]) return false;
  // The shard slice is flat: the matrix view takes the parameter's (piece's) shape from the plan.
  const c10::IntArrayRef shape(plan_.params[i].shape);
  add_muon_task(i, p.view(shape), grad.view(shape), split_for(i), tasks, stepped);
  return true;
}

void DistributedMuonWithAdamW::add_muon_task(size_t i, const at::Tensor& value, const at::Tensor& grad,
                                             const ParamSplit* split, std::vector<MuonTask>& tasks,
                                             std::vector<size_t>& stepped) {
  const ParamGroup& g = groups_[assignment_[i].group_index];
  at::Tensor& m = momentum_[i];
  if (!m.defined()) m = at::zeros(grad.sizes(), grad.options());
  tasks.push_back(
      {value, muon_momentum_direction(grad, m, g.muon), split, assignment_[i].group_index, &g.muon, params_[i].name});
  stepped.push_back(i);
}

void DistributedMuonWithAdamW::audit_ns(const NsCounts& expected) const {
  if (!debug_checks_enabled()) return;
  check_ns_counts(expected, last_ns_counts_, groups_,
                  "DistributedMuonWithAdamW::step on rank " + std::to_string(dp_.rank()) +
                      (tp_.size() > 1 ? " (tensor-parallel rank " + std::to_string(tp_.rank()) + ")" : std::string()));
}

void DistributedMuonWithAdamW::update_and_gather_in_buckets(const std::vector<char>& any,
                                                            const at::Tensor& shard_grad) {
  // A segment is updated with the bucket holding its first element, so everything reaching into
  // bucket k is updated before bucket k's all-gather starts; it travels while later buckets compute
  // (MPI must not see its send buffer change: later buckets write only later elements).
  const int64_t base = static_cast<int64_t>(dp_.rank()) * plan_.shard_len;
  const int64_t K = buckets_.count();
  std::vector<std::vector<const PlanSegment*>> due(static_cast<size_t>(K));
  for (const auto& s : my_segments_) {
    if (any[s.param]) due[static_cast<size_t>(buckets_.bucket_of(s.buffer_offset - base))].push_back(&s);
  }
  // The NS audit's prediction: one batched call per distinct shape within each bucket.
  last_ns_counts_.clear();
  NsCounts expected;
  std::vector<WorkPtr> works;
  for (int64_t k = 0; k < K; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<MuonTask> tasks;
    std::vector<size_t> stepped;
    for (const PlanSegment* s : due[static_cast<size_t>(k)]) update_segment(*s, shard_grad, tasks, stepped);
    // Between matrices the earlier buckets' all-gathers are driven (MPI progresses them only inside MPI calls).
    add_ns_counts(last_ns_counts_, apply_muon_tasks(tasks, [&] {
                    for (auto& w : works) w->test();
                  }));
    if (debug_checks_enabled()) add_ns_counts(expected, expected_ns_counts(audit_params_, stepped));
    last_times_.update_ms += ms_since(t0);
    works.push_back(post_gather(k));
    for (auto& w : works) w->test();  // drive the buckets already in flight
  }
  audit_ns(expected);
  unpack_gathers(works);
}

void DistributedMuonWithAdamW::unpack_gathers(std::vector<WorkPtr>& all_gathers) {
  for (int64_t k = 0; k < buckets_.count(); ++k) {
    auto t0 = std::chrono::steady_clock::now();
    all_gathers[static_cast<size_t>(k)]->wait();
    last_times_.gather_wait_ms += ms_since(t0);
    t0 = std::chrono::steady_clock::now();
    unpack_bucket(k);
    last_times_.unpack_ms += ms_since(t0);
  }
}

void DistributedMuonWithAdamW::update_and_gather_element_wise_in_buckets(const std::vector<char>& any,
                                                                         const at::Tensor& shard_grad) {
  const auto t_update = std::chrono::steady_clock::now();
  const int64_t K = buckets_.count();
  std::vector<PostedExchange> gathers, scatters;
  std::vector<WorkPtr> all_gathers;
  auto drive = [&] {  // MPI progresses non-blocking collectives only inside MPI calls
    for (auto& x : gathers) x.work->test();
    for (auto& x : scatters) x.work->test();
    for (auto& w : all_gathers) w->test();
  };
  for (int64_t k = 0; k < K; ++k) gathers.push_back(post_gather_to_owners(shard_grad, k));
  // AdamW runs while the gradients travel (a Muon piece is left to its owner: update_segment is false).
  std::vector<MuonTask> none;
  std::vector<size_t> stepped;
  for (const auto& s : my_segments_) {
    if (any[s.param]) update_segment(s, shard_grad, none, stepped);
  }
  drive();
  last_ns_counts_.clear();
  NsCounts expected;
  // Bucket k-1's scatter-back is finished (its pieces land in param_shard_) and its all-gather posted
  // after bucket k's Newton-Schulz: the same point in the sequence on every rank.
  auto finish_bucket = [&](int64_t j) {
    finish_scatter_owned_values(scatters[static_cast<size_t>(j)], j);
    all_gathers.push_back(post_gather(j));
  };
  for (int64_t k = 0; k < K; ++k) {
    const std::vector<at::Tensor> grads = finish_gather_to_owners(gathers[static_cast<size_t>(k)], shard_grad, k);
    std::vector<at::Tensor> owned;  // this bucket's matrices owned here, in parameter order
    std::vector<MuonTask> tasks;
    std::vector<size_t> stepped_muon;
    size_t next = 0;
    for (size_t i : owned_params(k)) {
      const c10::IntArrayRef shape(plan_.params[i].shape);
      owned.push_back(params_[i].tensor.detach().clone().view(-1));  // the owner steps a copy
      const at::Tensor grad = grads[next++].view(shape);
      if (any[i]) add_muon_task(i, owned.back().view(shape), grad, split_for(i), tasks, stepped_muon);
    }
    add_ns_counts(last_ns_counts_, apply_muon_tasks(tasks, drive));
    if (debug_checks_enabled()) add_ns_counts(expected, expected_ns_counts(audit_params_, stepped_muon));
    scatters.push_back(post_scatter_owned_values(owned, k));
    if (k > 0) finish_bucket(k - 1);
    drive();
  }
  finish_bucket(K - 1);
  audit_ns(expected);
  last_times_.update_ms += ms_since(t_update) - last_times_.exchange_wait_ms;
  unpack_gathers(all_gathers);
}

void DistributedMuonWithAdamW::update_gathered_or_element_wise(const std::vector<char>& any,
                                                               const at::Tensor& shard_grad) {
  const auto t_update = std::chrono::steady_clock::now();
  const bool tp = tp_.size() > 1;
  const int64_t base = static_cast<int64_t>(dp_.rank()) * plan_.shard_len;
  std::vector<MuonTask> tasks;
  std::vector<size_t> stepped_muon;
  // This DP index's Muon parameters orthogonalized by a TP owner, with their averaged gradient and
  // value pieces (flat) and where the updated piece goes; the same list on every TP rank.
  std::vector<size_t> gathered;
  std::vector<at::Tensor> gathered_grads, gathered_values;
  for (const auto& s : my_segments_) {
    if (!any[s.param] || update_segment(s, shard_grad, tasks, stepped_muon)) continue;
    if (element_wise()) continue;  // layout B: the owner steps the whole matrix below
    gathered.push_back(s.param);
    gathered_grads.push_back(shard_grad.narrow(0, s.buffer_offset - base, s.count));
    gathered_values.push_back(param_shard_.narrow(0, s.buffer_offset - base, s.count));
  }
  // Layout B: every owned matrix's gradient, whole, from the shards holding its pieces; the owner
  // steps a copy of the current value (every rank holds every parameter).
  std::vector<at::Tensor> owned;  // in parameter order
  if (element_wise()) {
    std::vector<at::Tensor> grads = gather_to_owners(shard_grad);
    size_t k = 0;
    for (size_t i : owned_params(-1)) {
      const c10::IntArrayRef shape(plan_.params[i].shape);
      owned.push_back(params_[i].tensor.detach().clone().view(-1));
      const at::Tensor grad = grads[k++].view(shape);
      if (!any[i]) continue;
      if (grid_.gathered[i]) {  // with TP: the piece goes to its TP owner below
        gathered.push_back(i);
        gathered_grads.push_back(grad.view(-1));
        gathered_values.push_back(owned.back());
        continue;
      }
      add_muon_task(i, owned.back().view(shape), grad, split_for(i), tasks, stepped_muon);
    }
  }
  // The gathered pieces travel to their TP owners while this rank's own matrices are orthogonalized.
  std::vector<at::Tensor> logical_values;
  PostedExchange to_owners;
  if (tp) to_owners = post_send_gathered(gathered, gathered_grads, gathered_values);
  last_ns_counts_ = apply_muon_tasks(tasks, [&] {
    if (tp) to_owners.work->test();
  });
  NsCounts expected;
  if (debug_checks_enabled()) expected = expected_ns_counts(audit_params_, stepped_muon);
  if (tp) {
    std::vector<MuonTask> gathered_tasks;
    std::vector<size_t> stepped_gathered;
    finish_send_gathered(to_owners, gathered, gathered_tasks, logical_values, stepped_gathered);
    add_ns_counts(last_ns_counts_, apply_muon_tasks(gathered_tasks));
    if (debug_checks_enabled()) add_ns_counts(expected, expected_ns_counts(audit_params_, stepped_gathered));
  }
  if (debug_checks_enabled()) audit_ns(expected);
  if (tp) return_gathered_pieces(gathered, logical_values, gathered_values);
  if (element_wise()) scatter_owned_values(owned);
  last_times_.update_ms += ms_since(t_update) - last_times_.exchange_wait_ms;
}

namespace {

/// One uneven all-to-all of `chunks` (concatenated, send_counts elements per destination) over
/// `comm`, posted: x.recv receives, x.offset says where each source's block starts in it.
PostedExchange post_exchange(Communicator& comm, const std::vector<at::Tensor>& chunks,
                             const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts,
                             const at::TensorOptions& opts) {
  PostedExchange x;
  x.send = chunks.empty() ? at::empty({0}, opts) : at::cat(chunks);
  x.recv = at::empty({std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0})}, opts);
  x.offset.assign(recv_counts.size(), 0);
  for (size_t q = 1; q < x.offset.size(); ++q) x.offset[q] = x.offset[q - 1] + recv_counts[q - 1];
  x.work = comm.iall_to_all(x.recv, x.send, send_counts, recv_counts);
  return x;
}

/// The same, blocking: the received elements and where each source's block starts in them.
std::pair<at::Tensor, std::vector<int64_t>> exchange(Communicator& comm, const std::vector<at::Tensor>& chunks,
                                                     const std::vector<int64_t>& send_counts,
                                                     const std::vector<int64_t>& recv_counts,
                                                     const at::TensorOptions& opts) {
  PostedExchange x = post_exchange(comm, chunks, send_counts, recv_counts, opts);
  x.work->wait();
  return {x.recv, x.offset};
}

}  // namespace

const std::vector<const PlanSegment*>& DistributedMuonWithAdamW::muon_segments(int64_t k) const {
  return muon_segments_[k < 0 ? muon_segments_.size() - 1 : static_cast<size_t>(k)];
}

const std::vector<size_t>& DistributedMuonWithAdamW::owned_params(int64_t k) const {
  return owned_params_[k < 0 ? owned_params_.size() - 1 : static_cast<size_t>(k)];
}

bool DistributedMuonWithAdamW::in_bucket(size_t i, int64_t k) const {
  return k < 0 || (!param_buckets_[i].empty() && param_buckets_[i].front() == k);
}

PostedExchange DistributedMuonWithAdamW::post_gather_to_owners(const at::Tensor& shard_grad, int64_t k) {
  const int W = dp_.size(), me = dp_.rank();
  const int64_t base = static_cast<int64_t>(me) * plan_.shard_len;
  // Sent to q: this shard's pieces of q's matrices, in buffer order.
  std::vector<int64_t> send_counts(static_cast<size_t>(W), 0), recv_counts(static_cast<size_t>(W), 0);
  std::vector<std::vector<at::Tensor>> by_dest(static_cast<size_t>(W));
  for (const auto& s : my_segments_) {
    const int q = plan_.owner[s.param];
    if (q < 0 || q == me || !in_bucket(s.param, k)) continue;
    by_dest[static_cast<size_t>(q)].push_back(shard_grad.narrow(0, s.buffer_offset - base, s.count));
    send_counts[static_cast<size_t>(q)] += s.count;
  }
  std::vector<at::Tensor> chunks;
  for (auto& d : by_dest) chunks.insert(chunks.end(), d.begin(), d.end());
  for (const PlanSegment* s : muon_segments(k)) {
    if (plan_.owner[s->param] == me && s->rank != me) recv_counts[static_cast<size_t>(s->rank)] += s->count;
  }
  return post_exchange(dp_, chunks, send_counts, recv_counts, shard_grad.options());
}

std::vector<at::Tensor> DistributedMuonWithAdamW::finish_gather_to_owners(PostedExchange& x,
                                                                          const at::Tensor& shard_grad, int64_t k) {
  const int me = dp_.rank();
  const int64_t base = static_cast<int64_t>(me) * plan_.shard_len;
  const auto t0 = std::chrono::steady_clock::now();
  x.work->wait();
  last_times_.exchange_wait_ms += ms_since(t0);
  // Each owned matrix whole: its own shard's piece and every other shard's, in segment order.
  std::vector<at::Tensor> out;
  std::map<size_t, size_t> slot;
  for (size_t i : owned_params(k)) {
    slot[i] = out.size();
    out.push_back(at::empty({plan_.params[i].numel()}, shard_grad.options()));
  }
  for (const PlanSegment* s : muon_segments(k)) {
    if (plan_.owner[s->param] != me) continue;
    at::Tensor dst = out[slot.at(s->param)].narrow(0, s->param_begin, s->count);
    if (s->rank == me) {
      dst.copy_(shard_grad.narrow(0, s->buffer_offset - base, s->count));
    } else {
      int64_t& o = x.offset[static_cast<size_t>(s->rank)];
      dst.copy_(x.recv.narrow(0, o, s->count));
      o += s->count;
    }
  }
  return out;
}

std::vector<at::Tensor> DistributedMuonWithAdamW::gather_to_owners(const at::Tensor& shard_grad) {
  PostedExchange x = post_gather_to_owners(shard_grad, -1);
  return finish_gather_to_owners(x, shard_grad, -1);
}

PostedExchange DistributedMuonWithAdamW::post_scatter_owned_values(const std::vector<at::Tensor>& owned, int64_t k) {
  const int W = dp_.size(), me = dp_.rank();
  const int64_t base = static_cast<int64_t>(me) * plan_.shard_len;
  std::map<size_t, size_t> slot;
  for (size_t i : owned_params(k)) slot.emplace(i, slot.size());
  if (slot.size() != owned.size()) {
    throw InvariantError("scatter_owned_values: " + std::to_string(owned.size()) + " values for the " +
                         std::to_string(slot.size()) + " matrices rank " + std::to_string(me) + " owns" +
                         (k < 0 ? std::string() : " in bucket " + std::to_string(k)));
  }
  // Sent to q: the pieces of this rank's matrices that sit in q's shard, in parameter order.
  std::vector<int64_t> send_counts(static_cast<size_t>(W), 0), recv_counts(static_cast<size_t>(W), 0);
  std::vector<std::vector<at::Tensor>> by_dest(static_cast<size_t>(W));
  for (const PlanSegment* s : muon_segments(k)) {
    if (plan_.owner[s->param] != me) continue;
    const at::Tensor piece = owned[slot.at(s->param)].narrow(0, s->param_begin, s->count);
    if (s->rank == me) {
      param_shard_.narrow(0, s->buffer_offset - base, s->count).copy_(piece);
    } else {
      by_dest[static_cast<size_t>(s->rank)].push_back(piece);
      send_counts[static_cast<size_t>(s->rank)] += s->count;
    }
  }
  std::vector<at::Tensor> chunks;
  for (auto& d : by_dest) chunks.insert(chunks.end(), d.begin(), d.end());
  for (const auto& s : my_segments_) {
    const int q = plan_.owner[s.param];
    if (q >= 0 && q != me && in_bucket(s.param, k)) recv_counts[static_cast<size_t>(q)] += s.count;
  }
  return post_exchange(dp_, chunks, send_counts, recv_counts, param_shard_.options());
}

void DistributedMuonWithAdamW::finish_scatter_owned_values(PostedExchange& x, int64_t k) {
  const int me = dp_.rank();
  const int64_t base = static_cast<int64_t>(me) * plan_.shard_len;
  const auto t0 = std::chrono::steady_clock::now();
  x.work->wait();
  last_times_.exchange_wait_ms += ms_since(t0);
  for (const auto& s : my_segments_) {
    const int q = plan_.owner[s.param];
    if (q < 0 || q == me || !in_bucket(s.param, k)) continue;
    int64_t& o = x.offset[static_cast<size_t>(q)];
    param_shard_.narrow(0, s.buffer_offset - base, s.count).copy_(x.recv.narrow(0, o, s.count));
    o += s.count;
  }
}

void DistributedMuonWithAdamW::scatter_owned_values(const std::vector<at::Tensor>& owned) {
  PostedExchange x = post_scatter_owned_values(owned, -1);
  finish_scatter_owned_values(x, -1);
}

PostedExchange DistributedMuonWithAdamW::post_send_gathered(const std::vector<size_t>& gathered,
                                                            const std::vector<at::Tensor>& grads,
                                                            const std::vector<at::Tensor>& values) {
  const int T = tp_.size(), me = tp_.rank();
  // Every TP rank of this DP index holds the same `gathered` list: the plan and the flags agree.
  std::vector<int64_t> send_counts(static_cast<size_t>(T), 0), recv_counts(static_cast<size_t>(T), 0);
  std::vector<at::Tensor> chunks;
  for (int t = 0; t < T; ++t) {
    for (size_t j = 0; j < gathered.size(); ++j) {
      const size_t i = gathered[j];
      if (grid_.tp_owner[i] != t) continue;
      const int64_t k = plan_.params[i].numel();
      chunks.push_back(grads[j]);
      chunks.push_back(values[j]);
      send_counts[static_cast<size_t>(t)] += 2 * k;
      if (t == me) {
        for (int q = 0; q < T; ++q) recv_counts[static_cast<size_t>(q)] += 2 * k;
      }
    }
  }
  return post_exchange(*tp_.comm, chunks, send_counts, recv_counts, param_shard_.options());
}

void DistributedMuonWithAdamW::finish_send_gathered(PostedExchange& x, const std::vector<size_t>& gathered,
                                                    std::vector<MuonTask>& tasks,
                                                    std::vector<at::Tensor>& logical_values,
                                                    std::vector<size_t>& stepped) {
  const int T = tp_.size(), me = tp_.rank();
  x.work->wait();
  // The owner: assemble each logical gradient and value, then Muon exactly as single-process.
  for (size_t i : gathered) {
    if (grid_.tp_owner[i] != me) continue;
    const int64_t k = plan_.params[i].numel();
    const c10::IntArrayRef piece(plan_.params[i].shape);
    std::vector<at::Tensor> grad_pieces, value_pieces;
    for (int q = 0; q < T; ++q) {
      int64_t& o = x.offset[static_cast<size_t>(q)];
      grad_pieces.push_back(x.recv.narrow(0, o, k).view(piece));
      value_pieces.push_back(x.recv.narrow(0, o + k, k).view(piece));
      o += 2 * k;
    }
    const at::Tensor grad = tp_assemble(grad_pieces, grid_.shard[i]);
    logical_values.push_back(tp_assemble(value_pieces, grid_.shard[i]));
    add_muon_task(i, logical_values.back(), grad, splits_.find(params_[i].name), tasks, stepped);
  }
}

void DistributedMuonWithAdamW::return_gathered_pieces(const std::vector<size_t>& gathered,
                                                      const std::vector<at::Tensor>& logical_values,
                                                      std::vector<at::Tensor>& dest) {
  const int T = tp_.size(), me = tp_.rank();
  std::vector<int64_t> send_counts(static_cast<size_t>(T), 0), recv_counts(static_cast<size_t>(T), 0);
  std::vector<at::Tensor> chunks;
  for (int t = 0; t < T; ++t) {
    size_t mine = 0;
    for (size_t i : gathered) {
      const int64_t k = plan_.params[i].numel();
      if (grid_.tp_owner[i] == me) {
        chunks.push_back(tp_piece(logical_values[mine++], grid_.shard[i], t, T).view(-1));
        send_counts[static_cast<size_t>(t)] += k;
      }
      if (t == 0) recv_counts[static_cast<size_t>(grid_.tp_owner[i])] += k;
    }
  }
  auto [recv, src_offset] = exchange(*tp_.comm, chunks, send_counts, recv_counts, param_shard_.options());
  for (size_t j = 0; j < gathered.size(); ++j) {
    const size_t i = gathered[j];
    const int64_t k = plan_.params[i].numel();
    int64_t& o = src_offset[static_cast<size_t>(grid_.tp_owner[i])];
    dest[j].copy_(recv.narrow(0, o, k));
    o += k;
  }
}

StateDict DistributedMuonWithAdamW::state_dict() const {
  std::vector<StateEntry> entries;
  for (const auto& s : holdings_) {
    const size_t i = s.param;
    if (!keeps_state(i)) continue;
    const ParamGroup& g = groups_[assignment_[i].group_index];
    StateEntry e;
    e.name = params_[i].name;
    e.algorithm = g.algorithm;
    e.group = g.name;
    e.step = steps_[i];
    e.shape = grid_.gathered[i] ? grid_.logical[i].shape : params_[i].tensor.sizes().vec();
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
  nlohmann::json layout = layout_record(grid_);
  layout["rank"] = dp_.rank();
  if (tp_.size() > 1) layout["tp_rank"] = tp_.rank();
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
  std::vector<size_t> expected_param;  // parameter index of each expected entry
  try {
    std::vector<ExpectedParam> expected;
    for (const auto& s : holdings_) {
      const size_t i = s.param;
      if (!keeps_state(i)) continue;
      const ParamGroup& g = groups_[assignment_[i].group_index];
      ExpectedParam e{params_[i].name,
                      g.algorithm,
                      g.name,
                      grid_.gathered[i] ? grid_.logical[i].shape : params_[i].tensor.sizes().vec(),
                      params_[i].tensor.scalar_type(),
                      std::nullopt};
      if (g.algorithm == Algorithm::kAdamW) e.range = std::array<int64_t, 2>{s.param_begin, s.param_begin + s.count};
      expected.push_back(std::move(e));
      expected_param.push_back(i);
    }
    auto check_layout = [&](const nlohmann::json& layout) {
      const int64_t saved_world = layout_int(layout, "world_size");
      if (saved_world != plan_.world) {
        throw StateDictError("load_state_dict: state saved at data-parallel world size " + std::to_string(saved_world) +
                             ", this job runs " + std::to_string(plan_.world) +
                             " (a state dict loads on its own grid; load_checkpoint reshards checkpoints)");
      }
      const int64_t saved_tp = layout.contains("tensor_parallel") ? layout_int(layout, "tensor_parallel") : 1;
      if (saved_tp != tp_.size()) {
        throw StateDictError("load_state_dict: state saved at tensor-parallel size " + std::to_string(saved_tp) +
                             ", this job runs " + std::to_string(tp_.size()));
      }
      if (saved_tp > 1 && layout_int(layout, "tp_rank") != tp_.rank()) {
        throw StateDictError("load_state_dict: this state belongs to tensor-parallel rank " +
                             std::to_string(layout_int(layout, "tp_rank")) +
                             " but was offered to tensor-parallel rank " + std::to_string(tp_.rank()));
      }
      if (!layout.contains("plan_hash") || !layout["plan_hash"].is_string()) {
        throw StateDictError("load_state_dict: layout record field 'plan_hash' is missing or not a string");
      }
      if (layout["plan_hash"].get<std::string>() != hex(grid_.hash)) {
        throw StateDictError("load_state_dict: state saved with owner plan " + layout["plan_hash"].get<std::string>() +
                             ", this job's plan is " + hex(grid_.hash) +
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
  if (tp_.comm != nullptr) tp_.comm->all_reduce(failed, ReduceOp::kMax);
  if (failed.cpu().item<int64_t>() != 0) {
    throw StateDictError(error.empty() ? "load_state_dict failed on another data-parallel rank (see its message)"
                                       : error + " [rank " + std::to_string(dp_.rank()) + "]");
  }
  c10::NoGradGuard no_grad;
  std::map<size_t, at::Tensor> held;  // parameter -> this rank's slice of the parameter shard
  const int64_t base = static_cast<int64_t>(dp_.rank()) * plan_.shard_len;
  for (const auto& s : my_segments_) held[s.param] = param_shard_.narrow(0, s.buffer_offset - base, s.count);
  for (auto& d : decoded.params) {
    const size_t i = expected_param[d.expected];
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
    } else if (held.count(i) != 0) {
      adamw_restore_moments(held.at(i), d.tensors[0], d.tensors[1], adamw_[i]);
    } else {
      adamw_[i].exp_avg = restore(0);
      adamw_[i].exp_avg_sq = restore(1);
    }
  }
  // Step counters of parameters held elsewhere: every rank keeps them, so take them from the holders.
  at::Tensor steps = at::zeros({static_cast<int64_t>(params_.size())}, at::kLong);
  for (const auto& s : holdings_) {
    if (s.param_begin == 0 && keeps_state(s.param)) steps[static_cast<int64_t>(s.param)] = steps_[s.param];
  }
  at::Tensor steps_dev = steps.to(dp_.device());
  dp_.all_reduce(steps_dev, ReduceOp::kMax);
  if (tp_.comm != nullptr) tp_.comm->all_reduce(steps_dev, ReduceOp::kMax);
  steps = steps_dev.cpu();
  for (size_t i = 0; i < params_.size(); ++i) steps_[i] = steps[static_cast<int64_t>(i)].item<int64_t>();
  sync_parameters();
  return decoded.report;
}

}  // namespace orthotron
