// element_plan.h: the element-wise shard layout of distributed Muon (layout B of distributed.md) as
// a pure function of the same inputs as the owner plan (owner_plan.h): every parameter in one flat
// buffer in parameter order, cut into W equal shards of ceil(P / W) elements exactly as ZeRO-1
// AdamW cuts them (no padding beyond the last shard). A Muon matrix may straddle shards; it keeps
// one owner, the same longest-processing-time choice as layout A, to which the pieces of its
// gradient held in other ranks' shards travel in one all-to-all with uneven splits, and from which
// the pieces of the result travel back in a second one. And `auto`: the layout whose busiest rank
// moves fewer elements per step. No tensors are touched and nothing is communicated, so it can be
// computed for any W. This file is the plan and the choice only: the distributed step runs layout A.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optim/owner_plan.h"

namespace orthotron {

struct ElementPlan {
  int world = 1;
  int64_t shard_len = 0;       ///< S = ceil(P / W), at least 1
  int64_t total_elements = 0;  ///< P
  std::vector<PlanParam> params;
  std::vector<int> owner;             ///< per parameter: owning rank for Muon, -1 for AdamW
  std::vector<PlanSegment> segments;  ///< parameter order = buffer order, cut at shard boundaries
  std::vector<double> ns_cost_per_rank;
  std::vector<int64_t> muon_elements_per_rank;   ///< elements of the matrices it owns (its momenta)
  std::vector<int64_t> adamw_elements_per_rank;  ///< AdamW elements in its shard (its moments: twice that)
  /// Per rank, elements of the gradient all-to-all: sent (Muon elements in its shard owned by others)
  /// and received (elements of its own matrices held in other shards). The scatter-back moves the
  /// reverse, so a rank's two all-to-alls together send and receive 2 x (sent + received).
  std::vector<int64_t> gather_sent, gather_received;
  uint64_t hash = 0;  ///< plan_layout_hash, then the layout tag

  /// NS cost imbalance: max over ranks / mean (1.0 when nothing is Muon).
  double ns_imbalance() const;
  /// Segments of rank r's shard, in buffer order.
  std::vector<PlanSegment> shard_segments(int rank) const;
  /// Optimizer state elements rank r keeps: its Muon momenta + 2 x its AdamW elements.
  int64_t state_elements(int rank) const;
  /// One line: W, S, P, NS imbalance, the all-to-all elements of the busiest rank, hash.
  std::string summary() const;
};

/// Builds layout B. Deterministic: a function of the inputs alone. InvalidArgument for world < 1
/// or duplicate names.
ElementPlan make_element_plan(const std::vector<PlanParam>& params, int world);

}  // namespace orthotron
