// element_plan.cpp: the even element-wise cut, and what each rank's Muon pieces travel.
#include "optim/element_plan.h"

#include <algorithm>

#include "base/fnv1a.h"

namespace orthotron {

OwnerPlan make_element_plan(const std::vector<PlanParam>& params, int world) {
  OwnerPlan plan;
  plan.layout = ShardLayout::kElementWise;
  plan.world = world;
  plan.params = params;
  plan.owner = assign_muon_owners(params, world, plan.ns_cost_per_rank, plan.muon_elements_per_rank);
  for (const auto& p : params) plan.total_elements += p.numel();
  plan.shard_len = std::max<int64_t>(1, (plan.total_elements + world - 1) / world);
  const auto W = static_cast<size_t>(world);
  plan.adamw_elements_per_rank.assign(W, 0);
  plan.gather_sent.assign(W, 0);
  plan.gather_received.assign(W, 0);
  // Parameters in order, each cut where it crosses a shard boundary.
  int64_t offset = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    int64_t begin = 0;
    const int64_t n = params[i].numel();
    while (begin < n) {
      const int rank = static_cast<int>(offset / plan.shard_len);
      const int64_t take = std::min(n - begin, static_cast<int64_t>(rank + 1) * plan.shard_len - offset);
      plan.segments.push_back({i, begin, take, offset, rank});
      const auto r = static_cast<size_t>(rank);
      if (plan.owner[i] < 0) {
        plan.adamw_elements_per_rank[r] += take;
      } else if (plan.owner[i] != rank) {
        plan.gather_sent[r] += take;
        plan.gather_received[static_cast<size_t>(plan.owner[i])] += take;
      }
      begin += take;
      offset += take;
    }
  }
  uint64_t h = plan_layout_hash(world, plan.shard_len, params, plan.owner, plan.segments);
  plan.hash = fnv1a_value(h, 'B');
  return plan;
}

}  // namespace orthotron
