// ns_audit.h: the Newton-Schulz plan audit. Published Muon integrations have silently run AdamW or
// SGD where the user asked for Muon (a group that resolved to no matrices, a fused weight never
// split, a stack seen as one flattened matrix). Every step, the containers compare what
// apply_muon_tasks ran, per group, with what the plan says the stepped parameters hold; a
// difference is an InvariantError. Runs when debug_checks_enabled() (the tests turn it on).
#pragma once

#include <string>
#include <vector>

#include "optim/muon_batch.h"
#include "optim/owner_plan.h"

namespace orthotron {

/// The NS work the plan predicts for one step over `stepped` (indices into `params`; AdamW entries
/// are ignored): per group, every matrix of every stepped Muon parameter, and one batched call per
/// distinct [m, n] among them.
NsCounts expected_ns_counts(const std::vector<PlanParam>& params, const std::vector<size_t>& stepped);

/// InvariantError when `actual` differs from `expected` in any group, naming the group, the
/// planned and the counted matrices and calls, and `where` (container and rank).
void check_ns_counts(const NsCounts& expected, const NsCounts& actual, const std::vector<ParamGroup>& groups,
                     const std::string& where);

}  // namespace orthotron
