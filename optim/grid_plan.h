// grid_plan.h: the owner plan of distributed Muon over a tensor-parallel x data-parallel grid, as
// a pure function of names, logical shapes, routing, splits, the TP layout and the grid shape.
//
// Every rank holds TP pieces (tp_layout.h). The data-parallel half is layout A (owner_plan.h) over
// the pieces: the TP ranks of one DP group all build the same owner plan, since their pieces have
// equal shapes, so a parameter's DP owner d holds every TP rank's piece of it after the
// reduce-scatter. The tensor-parallel half decides who orthogonalizes:
//   - a Muon parameter whose split parts each lie whole inside one piece (per-head QKV, a rank
//     holding whole query groups) is orthogonalized piece by piece, by each TP rank of DP index d,
//     on its own parts: "local";
//   - any other Muon parameter (QKV split as q/k/v or not at all, gate/up, row-parallel weights)
//     is "gathered": one TP rank t of DP index d, its TP owner, receives the other pieces, runs
//     Muon on the logical matrix and sends the pieces back.
// So each logical matrix or split part is orthogonalized by exactly one rank of the grid.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "optim/owner_plan.h"
#include "optim/tp_layout.h"

namespace orthotron {

struct GridPlan {
  int tp = 1;
  int tp_rank = 0;  ///< the rank this plan's local splits are for (everything else is rank-independent)
  OwnerPlan dp;     ///< the DP layout over the pieces (PlanParam::shape is the piece's shape): A, or B without TP
  std::string layout_reason;                       ///< why dp has its layout (make_plan's `why`)
  std::vector<PlanParam> logical;                  ///< per parameter: logical shape, matrices and NS cost
  std::vector<TpShard> shard;                      ///< per parameter
  std::vector<char> gathered;                      ///< per parameter: Muon, orthogonalized by its TP owner
  std::vector<int> tp_owner;                       ///< per parameter: the TP owner of a gathered one, else -1
  std::map<std::string, ParamSplit> local_splits;  ///< local Muon parameters with a split: tp_rank's parts
  std::vector<double> ns_cost_per_rank;            ///< per world rank (rank = tp + dp * TP)
  uint64_t hash = 0;                               ///< the DP plan's hash combined with the TP half

  int world() const { return tp * dp.world; }
  /// Whether this plan's TP rank keeps optimizer state for parameter i where it holds it: not for a
  /// gathered Muon parameter whose TP owner is another rank.
  bool keeps_state(size_t i) const { return !gathered[i] || tp_owner[i] == tp_rank; }
  /// Elements the rank at (tp_rank, dp_rank) sends and receives to and from other ranks in one
  /// step's two TP all-to-alls: per gathered parameter of its DP index with pieces of k elements, a
  /// non-owner sends 2k (gradient and value) and receives k back; the owner receives 2k(T-1) and
  /// sends k(T-1). Zero without TP.
  std::pair<int64_t, int64_t> tp_exchange_elements(int tp_rank, int dp_rank) const;
  /// NS cost imbalance over the whole grid: max / mean (1.0 when nothing is Muon).
  double ns_imbalance() const;
  /// The DP plan's summary plus a line on TP: gathered and local Muon parameters, NS imbalance.
  std::string summary() const;
};

/// The layout record of `plan`, without rank-specific fields: world_size (DP), plan_hash, shard_len,
/// owners, adamw_ranges, under layout B shard_layout and bucket_elements, and at TP > 1 tensor_parallel, tp_cuts and
/// tp_owners. The optimizer's state dict adds its rank to it; a checkpoint manifest stores it as is.
nlohmann::json layout_record(const GridPlan& plan);

/// Builds the grid plan for the parameters `logical` (plan_params over logical shapes, with the
/// logical `splits`) cut by `layout` over TP = layout.size ranks and `dp_size` data-parallel ranks,
/// with local splits for TP rank `tp_rank`. TP owners: per DP index, longest NS cost first, each to
/// the TP rank with the least gathered cost so far (ties: lower rank). InvalidArgument when a Muon
/// parameter is replicated across TP > 1 ranks (it would be orthogonalized T times) or a cut
/// parameter does not divide; ShapeError from the cuts.
/// `shard_layout` is make_plan's setting for the DP layout over the pieces (layout_choice.h):
/// owner_aligned, element_wise or auto; `bucket_elements` the bucket size layout B's cut follows.
GridPlan make_grid_plan(const std::vector<PlanParam>& logical, const SplitRegistry& splits,
                        const TensorParallelLayout& layout, int dp_size, int tp_rank,
                        const std::string& shard_layout = "owner_aligned", int64_t bucket_elements = 0);

}  // namespace orthotron
