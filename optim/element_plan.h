// element_plan.h: the element-wise shard layout of distributed Muon (layout B of distributed.md) as
// a pure function of the same inputs as the owner plan (owner_plan.h) plus a bucket size: the
// parameters in backward order (reverse parameter order) are grouped into buckets of whole
// parameters of about `bucket_elements` each, and every bucket is cut evenly by elements into W
// pieces, rank r holding the r-th (Megatron-LM's distributed-optimizer cut, a ZeRO-1 even cut per
// bucket; padding under W elements per bucket). Rank r's shard is its pieces, bucket after bucket,
// so the buffer's bucket k (shard_buckets.h, at the plan's bounds) is one contiguous run of the
// backward order: its reduce-scatter can start as soon as backward has produced those parameters'
// gradients. Each parameter lies in one bucket, so a rank holds at most one run of it. A Muon
// matrix is spread over the ranks of its bucket; it keeps one owner, the same longest-processing-
// time choice as layout A, to which the pieces of its gradient held in other ranks' shards travel
// in one all-to-all with uneven splits, and from which the pieces of the result travel back in a
// second one. `auto` picks the layout whose busiest rank moves fewer elements per step
// (layout_choice.h). No tensors are touched and nothing is communicated, so it can be computed for
// any W.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optim/owner_plan.h"

namespace orthotron {

/// The buckets of layout B: parameter indices in backward order, a new bucket opened before a
/// parameter with elements that would take the current one past `bucket_elements` (a parameter
/// larger than that is a bucket of its own). 0: one bucket of everything. Never empty.
std::vector<std::vector<size_t>> element_buckets(const std::vector<PlanParam>& params, int64_t bucket_elements);

/// Builds layout B (plan.layout == kElementWise) over element_buckets(params, bucket_elements):
/// bucket k of n_k elements gets L_k = ceil(n_k / W) elements of every shard (plan.bucket_bounds),
/// shard_len = sum of L_k (max(1, ceil(P / W)) with one bucket: ZeRO-1's cut); owners by
/// assign_muon_owners; the all-to-all counts in gather_sent / gather_received. Deterministic: a
/// function of the inputs alone; its hash differs from layout A's and covers the bounds.
/// InvalidArgument for world < 1, bucket_elements < 0 or duplicate names.
OwnerPlan make_element_plan(const std::vector<PlanParam>& params, int world, int64_t bucket_elements = 0);

/// The bucket_elements that buckets of `bucket_bytes` of reduce-scatter input hold (the whole
/// buffer's elements per bucket, as set_bucket_bytes counts them): bucket_bytes / element_size,
/// at least 1; 0 (one bucket) for bucket_bytes <= 0.
int64_t element_bucket_elements(int64_t bucket_bytes, int64_t element_size);

}  // namespace orthotron
