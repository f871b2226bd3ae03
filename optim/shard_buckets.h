// shard_buckets.h: the bucket-major arrangement of a W x S flat buffer, which lets the data-parallel
// step move its reduce-scatter and all-gather in buckets (overlapped with packing, Newton-Schulz and
// unpacking) while every bucket's collective reads and writes contiguous memory.
//
// Each shard [0, S) is cut into K buckets at bounds 0 = b_0 < b_1 < ... < b_K = S, bucket k of
// L_k = b_{k+1} - b_k elements (make_shard_buckets: all L but the last; layout B's plan: its own
// bounds, element_plan.h). Bucket k holds elements [b_k, b_{k+1}) of every shard; in the physical
// buffer it is one contiguous span of W x L_k elements starting at W b_k, rank r's part at
// W b_k + r L_k. So bucket k's reduce-scatter is a reduce-scatter of that span into the shard's
// [b_k, b_{k+1}), and its all-gather the reverse. With K = 1 the physical buffer is the logical
// one: rank r's shard at r S.
#pragma once

#include <cstdint>
#include <vector>

#include "optim/owner_plan.h"

namespace orthotron {

/// Where one piece of a parameter lives in the physical buffer: elements
/// [param_begin, param_begin + count) of the flat parameter at [physical, physical + count).
struct BucketPiece {
  size_t param = 0;
  int64_t param_begin = 0;
  int64_t count = 0;
  int64_t physical = 0;
};

struct ShardBuckets {
  int world = 1;
  int64_t shard_len = 0;        ///< S
  std::vector<int64_t> bounds;  ///< b_0 = 0 < ... < b_K = S ({0, 0} when S = 0: one empty bucket)

  int64_t count() const { return static_cast<int64_t>(bounds.size()) - 1; }  ///< K
  int64_t begin(int64_t k) const { return bounds[static_cast<size_t>(k)]; }
  int64_t len(int64_t k) const { return bounds[static_cast<size_t>(k) + 1] - begin(k); }  ///< L_k
  /// Bucket k's span in the physical buffer: W L_k elements from W b_k.
  int64_t span_begin(int64_t k) const { return world * begin(k); }
  int64_t span_len(int64_t k) const { return world * len(k); }
  /// The bucket holding shard-relative element x (0 <= x < S).
  int64_t bucket_of(int64_t x) const;
  /// Physical position of element x of rank r's shard.
  int64_t physical(int rank, int64_t x) const;
  /// `segment` cut at bucket boundaries: its pieces, appended to pieces[k] of each bucket k touched.
  void cut(const PlanSegment& segment, std::vector<std::vector<BucketPiece>>& pieces) const;
};

/// For each bucket k of `buckets` over `plan`: how far backward must have gone before bucket k's
/// reduce-scatter can start when gradients are reported as they become final
/// (DistributedMuonWithAdamW::begin_backward_reduction), as the share of all parameter elements whose
/// gradients are final by then, counting parameters in backward order (reverse parameter order, each
/// one's gradient final at once). Buckets start in order, so the shares never decrease; 1.0: only
/// when backward ends. A model whose backward finishes parameters in another order moves these.
std::vector<double> backward_start_shares(const OwnerPlan& plan, const ShardBuckets& buckets);

/// Buckets of about `bucket_bytes` of reduce-scatter input (W x L x element_size) each over a
/// W x S buffer: L = max(1, bucket_bytes / (W element_size)), capped at S, the last bucket shorter.
/// bucket_bytes <= 0 means one bucket (L = S). InvalidArgument for world < 1, S < 0, element_size < 1.
ShardBuckets make_shard_buckets(int world, int64_t shard_len, int64_t bucket_bytes, int64_t element_size);

/// Buckets at given bounds (0 = b_0 < ... < b_K = S, or {0, 0}). InvalidArgument naming the first
/// bound out of order.
ShardBuckets shard_buckets_at(int world, std::vector<int64_t> bounds);

}  // namespace orthotron
