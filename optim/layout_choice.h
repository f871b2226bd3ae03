// layout_choice.h: `auto` for the shard layout of distributed Muon: from the two plans alone (no
// tensors, no communication), each layout's elements sent plus received per step by its busiest
// rank, beside what ZeRO-1 AdamW moves on the same parameters, and the layout that moves fewer, with
// the reason in words. Per rank, a reduce-scatter or all-gather over W shards of S elements sends and
// receives (W - 1) S each; an all-to-all what the plan says. The one-element "has a gradient"
// all-reduce both layouts share is left out.
#pragma once

#include <cstdint>
#include <string>

#include "optim/element_plan.h"
#include "optim/owner_plan.h"

namespace orthotron {

struct LayoutCost {
  int64_t zero1 = 0;          ///< ZeRO-1 AdamW: reduce-scatter + all-gather over W x ceil(P / W)
  int64_t owner_aligned = 0;  ///< layout A: the same two collectives over W x S_A (its padding included)
  int64_t element_wise = 0;   ///< layout B: ZeRO-1's two plus both Muon all-to-alls of its busiest rank
  ShardLayout choice = ShardLayout::kOwnerAligned;  ///< fewer elements; a tie goes to A (no all-to-all)
  std::string reason;                               ///< "layout A pads 1456% of P ..., layout B ...: element_wise"
  double ratio(int64_t elements) const { return zero1 == 0 ? 1.0 : static_cast<double>(elements) / zero1; }
};

/// The costs of `a` (layout A) and `b` (layout B), plans of the same parameters at the same W
/// (InvalidArgument otherwise).
LayoutCost compare_layouts(const OwnerPlan& a, const OwnerPlan& b);

/// The plan `setting` names: "owner_aligned", "element_wise", or "auto" (compare_layouts' choice).
/// `why` (optional) receives compare_layouts' reason under auto, else "set to <setting>".
/// ConfigError naming the setting and the choices for anything else. Layout B is cut in buckets of
/// `bucket_elements` (make_element_plan; 0: one bucket).
OwnerPlan make_plan(const std::vector<PlanParam>& params, int world, const std::string& setting,
                    std::string* why = nullptr, int64_t bucket_elements = 0);

}  // namespace orthotron
