// muon_batch.h: the orthogonalize-and-apply half of a Muon step over many parameters at once:
// each parameter's direction is cut into its real matrices (split parts, expert stacks, or the
// whole matrix), same-shape matrices of a group go through one batched Newton-Schulz call, and
// each result is applied with its own shape scale. Shared by the single-process and distributed
// containers, so both compute the same bits.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "optim/muon.h"
#include "optim/split_registry.h"

namespace orthotron {

struct MuonTask {
  at::Tensor param;         ///< updated in place (may be a view into a flat shard buffer)
  at::Tensor direction;     ///< U from muon_momentum_direction, param's shape
  const ParamSplit* split;  ///< nullptr: the parameter is one matrix or a [k, m, n] stack
  size_t group;             ///< batching key: only matrices of one group share an NS call
  const MuonOptions* options;
  std::string name;
};

/// Orthogonalizes every task's matrices and applies W <- W (1 - lr wd) - lr scale O part by part.
/// Tasks are processed in order; matrices are batched by (group, m, n) in first-appearance order.
/// Blocking, no communication.
void apply_muon_tasks(const std::vector<MuonTask>& tasks);

/// The NS cost max(m,n) * min(m,n)^2 summed over the parameter's matrices (split parts or stack).
double muon_ns_cost(const std::vector<int64_t>& shape, const ParamSplit* split);

}  // namespace orthotron
