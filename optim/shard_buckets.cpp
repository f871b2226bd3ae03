// shard_buckets.cpp: bucket arithmetic of the bucket-major flat buffer.
#include "optim/shard_buckets.h"

#include <algorithm>

#include "base/errors.h"

namespace orthotron {

int64_t ShardBuckets::bucket_of(int64_t x) const {
  // The last bound <= x; x = S (past the end) lands in the last bucket.
  const auto it = std::upper_bound(bounds.begin() + 1, bounds.end() - 1, x);
  return static_cast<int64_t>(it - bounds.begin()) - 1;
}

int64_t ShardBuckets::physical(int rank, int64_t x) const {
  const int64_t k = bucket_of(x);
  return span_begin(k) + rank * len(k) + (x - begin(k));
}

void ShardBuckets::cut(const PlanSegment& segment, std::vector<std::vector<BucketPiece>>& pieces) const {
  const int64_t start = segment.buffer_offset - static_cast<int64_t>(segment.rank) * shard_len;
  int64_t done = 0;
  while (done < segment.count) {
    const int64_t x = start + done;
    const int64_t k = bucket_of(x);
    const int64_t n = std::min(segment.count - done, begin(k) + len(k) - x);
    pieces[static_cast<size_t>(k)].push_back({segment.param, segment.param_begin + done, n, physical(segment.rank, x)});
    done += n;
  }
}

std::vector<double> backward_start_shares(const OwnerPlan& plan, const ShardBuckets& buckets) {
  // final_share[i]: the share of elements final once parameter i's gradient is (those of i and after).
  std::vector<double> final_share(plan.params.size(), 0.0);
  const double total = static_cast<double>(std::max<int64_t>(plan.total_elements, 1));
  int64_t done = 0;
  for (size_t k = plan.params.size(); k-- > 0;) {
    done += plan.params[k].numel();
    final_share[k] = static_cast<double>(done) / total;
  }
  std::vector<double> share(static_cast<size_t>(buckets.count()), 0.0);
  for (const auto& seg : plan.segments) {
    const int64_t x = seg.buffer_offset - static_cast<int64_t>(seg.rank) * plan.shard_len;
    for (int64_t k = buckets.bucket_of(x); k <= buckets.bucket_of(x + seg.count - 1); ++k) {
      share[static_cast<size_t>(k)] = std::max(share[static_cast<size_t>(k)], final_share[seg.param]);
    }
  }
  for (size_t k = 1; k < share.size(); ++k) share[k] = std::max(share[k], share[k - 1]);
  return share;
}

ShardBuckets make_shard_buckets(int world, int64_t shard_len, int64_t bucket_bytes, int64_t element_size) {
  if (world < 1 || shard_len < 0 || element_size < 1) {
    throw InvalidArgument("make_shard_buckets: world " + std::to_string(world) + ", shard length " +
                          std::to_string(shard_len) + ", element size " + std::to_string(element_size));
  }
  int64_t len = shard_len;
  if (bucket_bytes > 0) len = std::min(shard_len, std::max<int64_t>(1, bucket_bytes / (world * element_size)));
  std::vector<int64_t> bounds = {0};
  for (int64_t b = len; b < shard_len; b += len) bounds.push_back(b);
  bounds.push_back(shard_len);
  return shard_buckets_at(world, std::move(bounds));
}

ShardBuckets shard_buckets_at(int world, std::vector<int64_t> bounds) {
  const bool empty = bounds.size() == 2 && bounds[0] == 0 && bounds[1] == 0;
  if (world < 1 || bounds.size() < 2 || bounds.front() != 0) {
    throw InvalidArgument("shard_buckets_at: world " + std::to_string(world) + ", " + std::to_string(bounds.size()) +
                          " bounds (expected at least 2, the first 0)");
  }
  for (size_t k = 1; k < bounds.size() && !empty; ++k) {
    if (bounds[k] <= bounds[k - 1]) {
      throw InvalidArgument("shard_buckets_at: bound " + std::to_string(k) + " is " + std::to_string(bounds[k]) +
                            ", not above bound " + std::to_string(k - 1) + " (" + std::to_string(bounds[k - 1]) + ")");
    }
  }
  ShardBuckets b;
  b.world = world;
  b.shard_len = bounds.back();
  b.bounds = std::move(bounds);
  return b;
}

}  // namespace orthotron
