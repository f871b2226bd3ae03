// owner_plan.h: the owner-aligned shard layout of distributed Muon (layout A of distributed.md),
// as a pure function of parameter names, shapes, roles, splits and the data-parallel size: which
// rank owns each Muon matrix, and where every parameter element sits in the flat W x S buffer.
// No tensors are touched and nothing is communicated, so it can be computed for any W.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optim/muon_batch.h"
#include "optim/param_routing.h"
#include "optim/split_registry.h"

namespace orthotron {

/// One parameter as the plan sees it.
struct PlanParam {
  std::string name;
  std::vector<int64_t> shape;
  Algorithm algorithm = Algorithm::kMuon;
  size_t group = 0;                       ///< index into the groups it was routed by
  std::vector<MuonMatrixShape> matrices;  ///< what NS orthogonalizes each step (muon_matrices); empty for AdamW
  double ns_cost = 0;                     ///< muon_ns_cost over its matrices (split parts or stack); 0 for AdamW
  int64_t numel() const;
};

/// A run of one parameter's elements in the flat buffer: param elements [param_begin,
/// param_begin + count) (row-major flat order) live at buffer [buffer_offset, buffer_offset + count).
struct PlanSegment {
  size_t param = 0;
  int64_t param_begin = 0;
  int64_t count = 0;
  int64_t buffer_offset = 0;
  int rank = 0;  ///< the shard holding it: buffer_offset / shard_len
};

/// The two shard layouts of distributed.md. Owner-aligned (A, make_owner_plan): each Muon matrix
/// whole in its owner's shard. Element-wise (B, element_plan.h): ZeRO-1's even cut per bucket, Muon pieces
/// travelling to their owner and back.
enum class ShardLayout { kOwnerAligned, kElementWise };
/// "owner_aligned" or "element_wise".
std::string to_string(ShardLayout layout);

/// The layout. Rank r's shard is buffer [r * shard_len, (r + 1) * shard_len). Layout A: the Muon
/// parameters r owns, whole, and the next run of AdamW elements (the AdamW parameters walked in
/// reverse order, each one's elements in order, cut anywhere, since AdamW is element-wise), so every
/// shard has the same length; padding only where the AdamW elements run out. Within a shard the
/// segments are in backward order (reverse parameter order), so the front of every shard is
/// complete early in backward. Layout B: see element_plan.h.
struct OwnerPlan {
  ShardLayout layout = ShardLayout::kOwnerAligned;
  int world = 1;
  int64_t shard_len = 0;       ///< S
  int64_t total_elements = 0;  ///< P (Muon + AdamW)
  std::vector<PlanParam> params;
  std::vector<int> owner;             ///< per parameter: owning rank for Muon, -1 for AdamW
  std::vector<PlanSegment> segments;  ///< sorted by buffer_offset; every element exactly once
  std::vector<double> ns_cost_per_rank;
  std::vector<int64_t> muon_elements_per_rank;
  std::vector<int64_t> adamw_elements_per_rank;
  /// Layout B, per rank, elements of the gradient all-to-all: sent (Muon elements in its shard owned
  /// by others) and received (elements of its own matrices held in other shards); the scatter-back
  /// moves the reverse. All zero under layout A.
  std::vector<int64_t> gather_sent, gather_received;
  /// Layout B: the bucket size its cut follows (element_plan.h; 0: one bucket) and the buckets'
  /// shard-relative bounds (0 = b_0 < ... < b_K = S), which the data-parallel step's buckets must
  /// use. Layout A: 0 and empty (any buckets fit it).
  int64_t bucket_elements = 0;
  std::vector<int64_t> bucket_bounds;
  uint64_t hash = 0;  ///< FNV-1a over everything above (bucket_elements only through the bounds)

  int64_t buffer_len() const { return shard_len * world; }
  int64_t padding() const { return buffer_len() - total_elements; }
  /// Padding relative to the parameters: (W S - P) / P.
  double padding_ratio() const;
  /// NS cost imbalance: max over ranks / mean over ranks (1.0 is perfect; 0 Muon cost gives 1.0).
  double ns_imbalance() const;
  /// Segments of rank r's shard, in buffer order.
  std::vector<PlanSegment> shard_segments(int rank) const;
  /// What rank r keeps state for and checkpoints: every Muon matrix it owns, whole (one segment from
  /// element 0; under layout A exactly its shard's Muon segments), then its shard's AdamW segments.
  std::vector<PlanSegment> holdings(int rank) const;
  /// Optimizer state elements rank r keeps: its Muon momenta + 2 x its AdamW elements.
  int64_t state_elements(int rank) const;
  /// A few lines: W, S, P, padding, NS imbalance, min/max state per rank.
  std::string summary() const;
};

/// Builds the plan. Owners: assign_muon_owners. S = max(largest per-rank Muon total, ceil(P / W)). Deterministic: it
/// depends on the inputs alone, never on addresses, ranks or timing. InvalidArgument for world < 1 or duplicate names.
OwnerPlan make_owner_plan(const std::vector<PlanParam>& params, int world);

/// The Muon owners both layouts use: longest-processing-time first by NS cost (ties: larger shape,
/// then name), each to the rank with the least cost so far (ties: fewer Muon elements, then the
/// rank whose parameters so far lie farthest from this one by parameter index, so each rank's
/// matrices spread over depth, then lower rank); -1 for AdamW parameters. Fills the per-rank NS cost and owned Muon
/// elements. InvalidArgument for world < 1 or duplicate names.
std::vector<int> assign_muon_owners(const std::vector<PlanParam>& params, int world,
                                    std::vector<double>& ns_cost_per_rank,
                                    std::vector<int64_t>& muon_elements_per_rank);

/// FNV-1a over a layout: world, shard length, every parameter (name, shape, routing, group,
/// matrices, NS cost, owner) and every segment. Both layouts hash with it.
uint64_t plan_layout_hash(int world, int64_t shard_len, const std::vector<PlanParam>& params,
                          const std::vector<int>& owner, const std::vector<PlanSegment>& segments);

/// PlanParams for named shapes routed by `groups`/`assignment`, with matrices and NS costs from `splits`.
std::vector<PlanParam> plan_params(const std::vector<Assignment>& assignment, const std::vector<ParamGroup>& groups,
                                   const SplitRegistry& splits);

/// The same from names and logical shapes alone: routes them (route_parameters), checks the splits
/// against the routing and the shapes (check_split_routing), then plan_params. This is what both
/// containers compute at construction, so a plan for any world size (a resume, a benchmark, a test)
/// needs no tensor and cannot drift from theirs. Throws what those throw.
std::vector<PlanParam> plan_params(const std::vector<ParamShape>& shapes, const std::vector<ParamGroup>& groups,
                                   const std::vector<RoutingRule>& rules, const SplitRegistry& splits);

}  // namespace orthotron
