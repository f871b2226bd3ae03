// element_plan.cpp: the element-wise cut bucket by bucket, and what each rank's Muon pieces travel.
#include "optim/element_plan.h"

#include <algorithm>

#include "base/errors.h"
#include "base/fnv1a.h"

namespace orthotron {

std::vector<std::vector<size_t>> element_buckets(const std::vector<PlanParam>& params, int64_t bucket_elements) {
  std::vector<std::vector<size_t>> buckets(1);
  int64_t filled = 0;
  for (size_t i = params.size(); i-- > 0;) {
    const int64_t n = params[i].numel();
    if (bucket_elements > 0 && n > 0 && filled > 0 && filled + n > bucket_elements) {
      buckets.emplace_back();
      filled = 0;
    }
    buckets.back().push_back(i);
    filled += n;
  }
  return buckets;
}

OwnerPlan make_element_plan(const std::vector<PlanParam>& params, int world, int64_t bucket_elements) {
  if (bucket_elements < 0) {
    throw InvalidArgument("element plan: bucket_elements must be >= 0 (0: one bucket), got " +
                          std::to_string(bucket_elements));
  }
  OwnerPlan plan;
  plan.layout = ShardLayout::kElementWise;
  plan.world = world;
  plan.params = params;
  plan.owner = assign_muon_owners(params, world, plan.ns_cost_per_rank, plan.muon_elements_per_rank);
  plan.bucket_elements = bucket_elements;
  const std::vector<std::vector<size_t>> buckets = element_buckets(params, bucket_elements);
  // Bounds: bucket k's n_k elements cut into W pieces of ceil(n_k / W), the last ones padded.
  std::vector<int64_t> bucket_total(buckets.size(), 0);
  plan.bucket_bounds = {0};
  for (size_t k = 0; k < buckets.size(); ++k) {
    for (size_t i : buckets[k]) bucket_total[k] += params[i].numel();
    plan.total_elements += bucket_total[k];
    plan.bucket_bounds.push_back(plan.bucket_bounds.back() + (bucket_total[k] + world - 1) / world);
  }
  if (plan.bucket_bounds.back() == 0) plan.bucket_bounds.back() = 1;  // nothing to hold: one element per shard
  plan.shard_len = plan.bucket_bounds.back();
  const auto W = static_cast<size_t>(world);
  plan.adamw_elements_per_rank.assign(W, 0);
  plan.gather_sent.assign(W, 0);
  plan.gather_received.assign(W, 0);
  // Within bucket k, element t (in backward order) is rank t / L_k's element b_k + t % L_k.
  for (size_t k = 0; k < buckets.size(); ++k) {
    const int64_t b = plan.bucket_bounds[k], len = plan.bucket_bounds[k + 1] - b;
    int64_t t = 0;
    for (size_t i : buckets[k]) {
      const int64_t n = params[i].numel();
      for (int64_t begin = 0; begin < n;) {
        const int rank = static_cast<int>(t / len);
        const int64_t take = std::min(n - begin, (rank + 1) * len - t);
        plan.segments.push_back({i, begin, take, rank * plan.shard_len + b + t % len, rank});
        const auto r = static_cast<size_t>(rank);
        if (plan.owner[i] < 0) {
          plan.adamw_elements_per_rank[r] += take;
        } else if (plan.owner[i] != rank) {
          plan.gather_sent[r] += take;
          plan.gather_received[static_cast<size_t>(plan.owner[i])] += take;
        }
        begin += take;
        t += take;
      }
    }
  }
  std::sort(plan.segments.begin(), plan.segments.end(),
            [](const PlanSegment& a, const PlanSegment& b) { return a.buffer_offset < b.buffer_offset; });
  uint64_t h = plan_layout_hash(world, plan.shard_len, params, plan.owner, plan.segments);
  h = fnv1a_value(h, 'B');
  for (int64_t bound : plan.bucket_bounds) h = fnv1a_value(h, bound);
  plan.hash = h;
  return plan;
}

int64_t element_bucket_elements(int64_t bucket_bytes, int64_t element_size) {
  if (bucket_bytes <= 0) return 0;
  return std::max<int64_t>(1, bucket_bytes / std::max<int64_t>(1, element_size));
}

}  // namespace orthotron
