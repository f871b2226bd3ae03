// element_plan.h: the element-wise shard layout of distributed Muon (layout B of distributed.md) as
// a pure function of the same inputs as the owner plan (owner_plan.h): every parameter in one flat
// buffer in parameter order, cut into W equal shards of ceil(P / W) elements exactly as ZeRO-1
// AdamW cuts them (no padding beyond the last shard). A Muon matrix may straddle shards; it keeps
// one owner, the same longest-processing-time choice as layout A, to which the pieces of its
// gradient held in other ranks' shards travel in one all-to-all with uneven splits, and from which
// the pieces of the result travel back in a second one. `auto` picks the layout whose busiest rank
// moves fewer elements per step (layout_choice.h). No tensors are touched and nothing is
// communicated, so it can be computed for any W.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optim/owner_plan.h"

namespace orthotron {

/// Builds layout B (plan.layout == kElementWise): segments in parameter order = buffer order, cut at
/// shard boundaries; shard_len = max(1, ceil(P / W)); owners by assign_muon_owners; the all-to-all
/// counts in gather_sent / gather_received. Deterministic: a function of the inputs alone; its hash
/// differs from layout A's. InvalidArgument for world < 1 or duplicate names.
OwnerPlan make_element_plan(const std::vector<PlanParam>& params, int world);

}  // namespace orthotron
