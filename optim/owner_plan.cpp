// owner_plan.cpp: LPT owner assignment and the owner-aligned flat buffer layout.
#include "optim/owner_plan.h"

#include <algorithm>
#include <iterator>
#include <numeric>
#include <set>
#include <sstream>

#include "base/errors.h"
#include "base/fnv1a.h"
#include "optim/muon_batch.h"

namespace orthotron {

int64_t PlanParam::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

double OwnerPlan::padding_ratio() const {
  return total_elements == 0 ? 0.0 : static_cast<double>(padding()) / static_cast<double>(total_elements);
}

double OwnerPlan::ns_imbalance() const {
  const double total = std::accumulate(ns_cost_per_rank.begin(), ns_cost_per_rank.end(), 0.0);
  if (total == 0) return 1.0;
  return *std::max_element(ns_cost_per_rank.begin(), ns_cost_per_rank.end()) / (total / world);
}

std::string to_string(ShardLayout layout) {
  return layout == ShardLayout::kOwnerAligned ? "owner_aligned" : "element_wise";
}

std::vector<PlanSegment> OwnerPlan::holdings(int rank) const {
  if (layout == ShardLayout::kOwnerAligned) return shard_segments(rank);
  std::vector<PlanSegment> out;
  for (size_t i = 0; i < params.size(); ++i) {
    if (owner[i] == rank) out.push_back({i, 0, params[i].numel(), -1, rank});
  }
  for (const auto& s : segments) {
    if (s.rank == rank && owner[s.param] < 0) out.push_back(s);
  }
  return out;
}

std::vector<PlanSegment> OwnerPlan::shard_segments(int rank) const {
  std::vector<PlanSegment> out;
  for (const auto& s : segments) {
    if (s.rank == rank) out.push_back(s);
  }
  return out;
}

int64_t OwnerPlan::state_elements(int rank) const {
  return muon_elements_per_rank[static_cast<size_t>(rank)] + 2 * adamw_elements_per_rank[static_cast<size_t>(rank)];
}

std::string OwnerPlan::summary() const {
  int64_t lo = state_elements(0), hi = lo;
  for (int r = 1; r < world; ++r) {
    lo = std::min(lo, state_elements(r));
    hi = std::max(hi, state_elements(r));
  }
  std::ostringstream out;
  out << (layout == ShardLayout::kOwnerAligned ? "owner plan" : "element-wise plan") << ": W=" << world
      << " S=" << shard_len << " P=" << total_elements << " padding=" << padding() << " (" << padding_ratio() * 100
      << "% of P) NS imbalance max/mean=" << ns_imbalance() << " state elements per rank min=" << lo << " max=" << hi
      << " hash=" << std::hex << hash;
  return out.str();
}

std::vector<int> assign_muon_owners(const std::vector<PlanParam>& params, int world,
                                    std::vector<double>& ns_cost_per_rank,
                                    std::vector<int64_t>& muon_elements_per_rank) {
  if (world < 1) throw InvalidArgument("owner plan: world size must be >= 1, got " + std::to_string(world));
  std::set<std::string> names;
  for (const auto& p : params) {
    if (!names.insert(p.name).second) throw InvalidArgument("owner plan: parameter name '" + p.name + "' repeats");
  }
  std::vector<int> owner(params.size(), -1);
  ns_cost_per_rank.assign(static_cast<size_t>(world), 0.0);
  muon_elements_per_rank.assign(static_cast<size_t>(world), 0);
  // LPT by NS cost; ties by larger shape (lexicographic), then name.
  std::vector<size_t> muon;
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].algorithm == Algorithm::kMuon) muon.push_back(i);
  }
  std::sort(muon.begin(), muon.end(), [&](size_t a, size_t b) {
    if (params[a].ns_cost != params[b].ns_cost) return params[a].ns_cost > params[b].ns_cost;
    if (params[a].shape != params[b].shape) return params[a].shape > params[b].shape;
    return params[a].name < params[b].name;
  });
  // Among ranks tied on cost and elements, the one whose parameters lie farthest (by index) from
  // this one, then the lower rank: each rank's matrices then spread over the model's depth, so that
  // every shard (in backward order) has late-layer gradients at its front and buckets can start
  // early in backward. Only ties move, so costs and element counts per rank are as plain LPT's.
  std::vector<std::set<size_t>> owned(static_cast<size_t>(world));
  auto distance = [&](size_t r, size_t i) {
    const std::set<size_t>& mine = owned[r];
    if (mine.empty()) return params.size();
    auto above = mine.lower_bound(i);
    size_t d = above == mine.end() ? params.size() : *above - i;
    if (above != mine.begin()) d = std::min(d, i - *std::prev(above));
    return d;
  };
  for (size_t i : muon) {
    int best = 0;
    size_t best_distance = distance(0, i);
    for (int r = 1; r < world; ++r) {
      const auto ur = static_cast<size_t>(r), ub = static_cast<size_t>(best);
      if (ns_cost_per_rank[ur] > ns_cost_per_rank[ub] ||
          (ns_cost_per_rank[ur] == ns_cost_per_rank[ub] && muon_elements_per_rank[ur] > muon_elements_per_rank[ub])) {
        continue;
      }
      const bool tied =
          ns_cost_per_rank[ur] == ns_cost_per_rank[ub] && muon_elements_per_rank[ur] == muon_elements_per_rank[ub];
      const size_t d = distance(ur, i);
      if (!tied || d > best_distance) {
        best = r;
        best_distance = d;
      }
    }
    owned[static_cast<size_t>(best)].insert(i);
    owner[i] = best;
    ns_cost_per_rank[static_cast<size_t>(best)] += params[i].ns_cost;
    muon_elements_per_rank[static_cast<size_t>(best)] += params[i].numel();
  }
  return owner;
}

uint64_t plan_layout_hash(int world, int64_t shard_len, const std::vector<PlanParam>& params,
                          const std::vector<int>& owner, const std::vector<PlanSegment>& segments) {
  uint64_t h = kFnv1aOffset;
  h = fnv1a_value(h, world);
  h = fnv1a_value(h, shard_len);
  for (size_t i = 0; i < params.size(); ++i) {
    h = fnv1a(h, params[i].name.data(), params[i].name.size());
    for (int64_t d : params[i].shape) h = fnv1a_value(h, d);
    h = fnv1a_value(h, static_cast<int>(params[i].algorithm));
    h = fnv1a_value(h, params[i].group);
    for (const auto& m : params[i].matrices) {
      h = fnv1a_value(h, m.m);
      h = fnv1a_value(h, m.n);
      h = fnv1a_value(h, m.count);
    }
    h = fnv1a_value(h, params[i].ns_cost);
    h = fnv1a_value(h, owner[i]);
  }
  for (const auto& s : segments) {
    h = fnv1a_value(h, s.param);
    h = fnv1a_value(h, s.param_begin);
    h = fnv1a_value(h, s.count);
    h = fnv1a_value(h, s.buffer_offset);
  }
  return h;
}

OwnerPlan make_owner_plan(const std::vector<PlanParam>& params, int world) {
  OwnerPlan plan;
  plan.world = world;
  plan.params = params;
  // 1. Owners.
  plan.owner = assign_muon_owners(params, world, plan.ns_cost_per_rank, plan.muon_elements_per_rank);
  plan.adamw_elements_per_rank.assign(static_cast<size_t>(world), 0);
  plan.gather_sent.assign(static_cast<size_t>(world), 0);
  plan.gather_received.assign(static_cast<size_t>(world), 0);
  for (const auto& p : params) plan.total_elements += p.numel();
  // 2. Shard length.
  const int64_t max_muon = *std::max_element(plan.muon_elements_per_rank.begin(), plan.muon_elements_per_rank.end());
  plan.shard_len = std::max<int64_t>({max_muon, (plan.total_elements + world - 1) / world, 1});

  // 3. Layout: each shard holds its owned Muon parameters and the next run of AdamW elements (the
  // AdamW parameters walked in reverse order), the whole shard then sorted into backward order
  // (reverse parameter order, the order in which backward produces gradients), so a bucket near the
  // front of every shard is complete early in backward (begin_backward_reduction).
  std::vector<size_t> order(params.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = order.size() - 1 - k;
  size_t adam_k = 0;     // position in `order` of the AdamW parameter being placed
  int64_t adam_pos = 0;  // its next element to place
  auto next_adamw = [&]() {
    while (adam_k < order.size() &&
           (params[order[adam_k]].algorithm != Algorithm::kAdamW || adam_pos >= params[order[adam_k]].numel())) {
      ++adam_k;
      adam_pos = 0;
    }
  };
  for (int r = 0; r < world; ++r) {
    const size_t shard_first = plan.segments.size();
    int64_t offset = static_cast<int64_t>(r) * plan.shard_len;
    const int64_t end = offset + plan.shard_len;
    for (size_t i : order) {
      if (plan.owner[i] != r) continue;
      plan.segments.push_back({i, 0, params[i].numel(), offset, r});
      offset += params[i].numel();
    }
    next_adamw();
    while (offset < end && adam_k < order.size()) {
      const size_t i = order[adam_k];
      const int64_t take = std::min(end - offset, params[i].numel() - adam_pos);
      if (take > 0) {
        plan.segments.push_back({i, adam_pos, take, offset, r});
        plan.adamw_elements_per_rank[static_cast<size_t>(r)] += take;
      }
      offset += take;
      adam_pos += take;
      next_adamw();
    }
    // A shard holds at most one segment of each parameter.
    const auto first = plan.segments.begin() + static_cast<std::ptrdiff_t>(shard_first);
    std::sort(first, plan.segments.end(), [](const PlanSegment& a, const PlanSegment& b) { return a.param > b.param; });
    int64_t at = static_cast<int64_t>(r) * plan.shard_len;
    for (auto it = first; it != plan.segments.end(); ++it) {
      it->buffer_offset = at;
      at += it->count;
    }
  }

  // 4. Hash of everything that must agree across ranks.
  plan.hash = plan_layout_hash(world, plan.shard_len, params, plan.owner, plan.segments);
  return plan;
}

std::vector<PlanParam> plan_params(const std::vector<Assignment>& assignment, const std::vector<ParamGroup>& groups,
                                   const SplitRegistry& splits) {
  std::vector<PlanParam> out;
  for (const auto& a : assignment) {
    PlanParam p;
    p.name = a.param;
    p.shape = a.shape;
    p.algorithm = groups[a.group_index].algorithm;
    p.group = a.group_index;
    if (p.algorithm == Algorithm::kMuon) {
      p.matrices = muon_matrices(p.shape, splits.find(p.name));
      p.ns_cost = muon_ns_cost(p.matrices);
    }
    out.push_back(std::move(p));
  }
  return out;
}

std::vector<PlanParam> plan_params(const std::vector<ParamShape>& shapes, const std::vector<ParamGroup>& groups,
                                   const std::vector<RoutingRule>& rules, const SplitRegistry& splits) {
  const std::vector<Assignment> assignment = route_parameters(shapes, groups, rules);
  check_split_routing(assignment, groups, splits);
  return plan_params(assignment, groups, splits);
}

}  // namespace orthotron
