// grid_plan.cpp: layout A over tensor-parallel pieces, and the TP owners of gathered Muon parameters.
#include "optim/grid_plan.h"

#include <algorithm>
#include <numeric>
#include <sstream>

#include "base/errors.h"
#include "base/fnv1a.h"
#include "optim/layout_choice.h"
#include "optim/muon_batch.h"

namespace orthotron {

double GridPlan::ns_imbalance() const {
  const double total = std::accumulate(ns_cost_per_rank.begin(), ns_cost_per_rank.end(), 0.0);
  if (total == 0) return 1.0;
  return *std::max_element(ns_cost_per_rank.begin(), ns_cost_per_rank.end()) /
         (total / static_cast<double>(ns_cost_per_rank.size()));
}

std::pair<int64_t, int64_t> GridPlan::tp_exchange_elements(int tp_rank, int dp_rank) const {
  int64_t sent = 0, received = 0;
  for (size_t i = 0; i < logical.size(); ++i) {
    if (!gathered[i] || dp.owner[i] != dp_rank) continue;
    const int64_t k = dp.params[i].numel();
    if (tp_owner[i] == tp_rank) {
      sent += k * (tp - 1);
      received += 2 * k * (tp - 1);
    } else {
      sent += 2 * k;
      received += k;
    }
  }
  return {sent, received};
}

std::string GridPlan::summary() const {
  if (tp == 1) return dp.summary() + "\nshard layout: " + layout_reason;
  int64_t n_gathered = 0, n_local = 0;
  for (size_t i = 0; i < logical.size(); ++i) {
    if (logical[i].algorithm != Algorithm::kMuon) continue;
    (gathered[i] ? n_gathered : n_local) += 1;
  }
  std::ostringstream out;
  out << dp.summary() << "\ntensor-parallel: TP=" << tp << " x DP=" << dp.world << "; Muon parameters gathered to one "
      << "TP owner: " << n_gathered << ", orthogonalized piece by piece (split parts whole in a piece): " << n_local
      << "; NS imbalance over the grid max/mean=" << ns_imbalance() << " grid hash=" << std::hex << hash
      << "\nshard layout: " << layout_reason;
  return out.str();
}

GridPlan make_grid_plan(const std::vector<PlanParam>& logical, const SplitRegistry& splits,
                        const TensorParallelLayout& layout, int dp_size, int tp_rank, const std::string& shard_layout,
                        int64_t bucket_elements) {
  const int tp = layout.size;
  if (tp < 1 || tp_rank < 0 || tp_rank >= tp) {
    throw InvalidArgument("grid plan: tensor-parallel rank " + std::to_string(tp_rank) + " of size " +
                          std::to_string(tp));
  }
  GridPlan plan;
  plan.tp = tp;
  plan.tp_rank = tp_rank;
  plan.logical = logical;
  const size_t n = logical.size();
  plan.shard.resize(n);
  plan.gathered.assign(n, 0);
  plan.tp_owner.assign(n, -1);

  // 1. Each parameter's piece, and whether its Muon work is local to a piece.
  std::vector<PlanParam> pieces = logical;
  for (size_t i = 0; i < n; ++i) {
    const PlanParam& p = logical[i];
    const TpShard shard = tp == 1 ? TpShard{} : layout.of(p.name);
    plan.shard[i] = shard;
    check_tp_divisible(p.name, p.shape, shard, tp);
    PlanParam& piece = pieces[i];
    if (shard.cut != TpCut::kReplicated) {
      piece.shape[shard.cut == TpCut::kRows ? 0 : 1] /= tp;
    }
    if (p.algorithm != Algorithm::kMuon || tp == 1) continue;
    if (shard.cut == TpCut::kReplicated) {
      throw InvalidArgument("parameter '" + p.name + "' is routed to Muon but replicated across the " +
                            std::to_string(tp) +
                            " tensor-parallel ranks, so every TP rank would orthogonalize it; cut it in the model's "
                            "tensor-parallel layout or route it to AdamW");
    }
    const ParamSplit* split = splits.find(p.name);
    if (tp_split_is_local(split, shard, tp)) {
      ParamSplit local = tp_local_split(*split, shard, tp_rank, tp);
      piece.matrices = muon_matrices(piece.shape, &local);
      piece.ns_cost = muon_ns_cost(piece.matrices);
      plan.local_splits.emplace(p.name, std::move(local));
    } else {
      plan.gathered[i] = 1;
      piece.matrices.clear();  // no NS on the piece; the TP owner runs the logical matrices
      piece.ns_cost = p.ns_cost / tp;
    }
  }

  // 2. The DP layout over the pieces: the same on every TP rank (equal piece shapes).
  plan.dp = make_plan(pieces, dp_size, shard_layout, &plan.layout_reason, bucket_elements);

  // 3. TP owners, per DP index, by longest-processing-time.
  std::vector<double> gathered_cost(static_cast<size_t>(tp * dp_size), 0.0);
  std::vector<size_t> order;
  for (size_t i = 0; i < n; ++i) {
    if (plan.gathered[i]) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (logical[a].ns_cost != logical[b].ns_cost) return logical[a].ns_cost > logical[b].ns_cost;
    return logical[a].name < logical[b].name;
  });
  for (size_t i : order) {
    const int d = plan.dp.owner[i];
    int best = 0;
    for (int t = 1; t < tp; ++t) {
      if (gathered_cost[static_cast<size_t>(t + d * tp)] < gathered_cost[static_cast<size_t>(best + d * tp)]) best = t;
    }
    plan.tp_owner[i] = best;
    gathered_cost[static_cast<size_t>(best + d * tp)] += logical[i].ns_cost;
  }
  plan.ns_cost_per_rank.assign(static_cast<size_t>(tp * dp_size), 0.0);
  for (int d = 0; d < dp_size; ++d) {
    for (int t = 0; t < tp; ++t) {
      const size_t r = static_cast<size_t>(t + d * tp);
      plan.ns_cost_per_rank[r] = gathered_cost[r];
    }
  }
  for (size_t i = 0; i < n; ++i) {
    if (logical[i].algorithm != Algorithm::kMuon || plan.gathered[i]) continue;
    for (int t = 0; t < tp; ++t) {
      plan.ns_cost_per_rank[static_cast<size_t>(t + plan.dp.owner[i] * tp)] += pieces[i].ns_cost;
    }
  }

  // 4. Hash: the DP plan, the logical shapes and the TP half.
  uint64_t h = fnv1a_value(kFnv1aOffset, plan.dp.hash);
  h = fnv1a_value(h, tp);
  for (size_t i = 0; i < n; ++i) {
    for (int64_t d : logical[i].shape) h = fnv1a_value(h, d);
    h = fnv1a_value(h, static_cast<int>(plan.shard[i].cut));
    h = fnv1a_value(h, plan.shard[i].blocks);
    h = fnv1a_value(h, plan.gathered[i]);
    h = fnv1a_value(h, plan.tp_owner[i]);
  }
  plan.hash = tp == 1 ? plan.dp.hash : h;
  return plan;
}

nlohmann::json layout_record(const GridPlan& plan) {
  const OwnerPlan& dp = plan.dp;
  std::ostringstream hash_hex;  // std::hex, no padding: the spelling every layout record has used
  hash_hex << std::hex << plan.hash;
  nlohmann::json owners = nlohmann::json::object(), ranges = nlohmann::json::object();
  for (size_t i = 0; i < dp.params.size(); ++i) {
    if (dp.owner[i] >= 0) owners[dp.params[i].name] = dp.owner[i];
  }
  for (const auto& s : dp.segments) {
    if (dp.owner[s.param] < 0)
      ranges[dp.params[s.param].name].push_back({s.rank, s.param_begin, s.param_begin + s.count});
  }
  nlohmann::json out = {{"world_size", dp.world},
                        {"plan_hash", hash_hex.str()},
                        {"shard_len", dp.shard_len},
                        {"owners", owners},
                        {"adamw_ranges", ranges}};
  if (dp.layout != ShardLayout::kOwnerAligned) {
    out["shard_layout"] = to_string(dp.layout);
    out["bucket_elements"] = dp.bucket_elements;
  }
  if (plan.tp > 1) {
    nlohmann::json cuts = nlohmann::json::object(), tp_owners = nlohmann::json::object();
    for (size_t i = 0; i < plan.logical.size(); ++i) {
      const std::string& name = plan.logical[i].name;
      if (plan.shard[i].cut != TpCut::kReplicated)
        cuts[name] = {{"cut", to_string(plan.shard[i].cut)}, {"blocks", plan.shard[i].blocks}};
      if (plan.gathered[i]) tp_owners[name] = plan.tp_owner[i];
    }
    out["tensor_parallel"] = plan.tp;
    out["tp_cuts"] = cuts;
    out["tp_owners"] = tp_owners;
  }
  return out;
}

}  // namespace orthotron
