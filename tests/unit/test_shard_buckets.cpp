// test_shard_buckets.cpp: the bucket-major buffer arrangement (optim/shard_buckets.h): one bucket
// is the plain shard-major buffer; any bucket size maps the W x S elements one to one onto the
// buffer, each bucket's span contiguous with rank r's part at r L_k; segments cut at bucket edges.
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "base/errors.h"
#include "gpt_fixture.h"
#include "optim/element_plan.h"
#include "optim/shard_buckets.h"

namespace orthotron {
namespace {

TEST(ShardBuckets, OneBucketIsTheShardMajorBuffer) {
  const ShardBuckets b = make_shard_buckets(3, 10, 0, 4);
  EXPECT_EQ(b.count(), 1);
  for (int r = 0; r < 3; ++r) {
    for (int64_t x = 0; x < 10; ++x) EXPECT_EQ(b.physical(r, x), r * 10 + x);
  }
}

TEST(ShardBuckets, EveryBucketSizeIsABijectionWithContiguousSpans) {
  for (int world : {1, 2, 3, 4}) {
    for (int64_t shard : {1, 7, 10, 33}) {
      for (int64_t len : {1, 2, 3, 5, 10, 40}) {
        const ShardBuckets b = make_shard_buckets(world, shard, len * world * 4, 4);
        ASSERT_EQ(b.len(0), std::min(len, shard));
        EXPECT_EQ(b.count(), (shard + b.len(0) - 1) / b.len(0));
        std::vector<int> seen(static_cast<size_t>(world * shard), 0);
        for (int r = 0; r < world; ++r) {
          for (int64_t x = 0; x < shard; ++x) {
            const int64_t k = b.bucket_of(x);
            const int64_t p = b.physical(r, x);
            ASSERT_GE(p, b.span_begin(k));
            ASSERT_LT(p, b.span_begin(k) + b.span_len(k));
            EXPECT_EQ(p - b.span_begin(k), r * b.len(k) + (x - b.begin(k)));
            ++seen[static_cast<size_t>(p)];
          }
        }
        for (int c : seen) EXPECT_EQ(c, 1) << "W=" << world << " S=" << shard << " L=" << len;
        int64_t spans = 0;
        for (int64_t k = 0; k < b.count(); ++k) {
          EXPECT_EQ(b.span_begin(k), spans);
          spans += b.span_len(k);
        }
        EXPECT_EQ(spans, world * shard);
      }
    }
  }
}

TEST(ShardBuckets, SegmentsAreCutAtBucketEdges) {
  const ShardBuckets b = make_shard_buckets(2, 10, 2 * 4 * 4, 4);  // L = 4: buckets [0,4) [4,8) [8,10)
  std::vector<std::vector<BucketPiece>> pieces(static_cast<size_t>(b.count()));
  PlanSegment seg;  // rank 1's elements [3, 9), parameter elements [100, 106)
  seg.param = 7;
  seg.rank = 1;
  seg.buffer_offset = 10 + 3;
  seg.count = 6;
  seg.param_begin = 100;
  b.cut(seg, pieces);
  ASSERT_EQ(pieces[0].size(), 1u);
  ASSERT_EQ(pieces[1].size(), 1u);
  ASSERT_EQ(pieces[2].size(), 1u);
  EXPECT_EQ(pieces[0][0].param_begin, 100);
  EXPECT_EQ(pieces[0][0].count, 1);
  EXPECT_EQ(pieces[0][0].physical, 4 + 3);  // bucket 0 span [0, 8), rank 1 at 4
  EXPECT_EQ(pieces[1][0].param_begin, 101);
  EXPECT_EQ(pieces[1][0].count, 4);
  EXPECT_EQ(pieces[1][0].physical, 8 + 4);  // bucket 1 span [8, 16), rank 1 at 12
  EXPECT_EQ(pieces[2][0].param_begin, 105);
  EXPECT_EQ(pieces[2][0].count, 1);
  EXPECT_EQ(pieces[2][0].physical, 16 + 2);  // bucket 2 span [16, 20), L_2 = 2, rank 1 at 18
  for (const auto& p : pieces) EXPECT_EQ(p[0].param, 7u);
}

TEST(ShardBuckets, BackwardStartSharesOfASmallPlan) {
  // e (AdamW, 6 elements), m1 and m2 (Muon 2 x 2) on one rank: the shard holds m2, m1, e in backward
  // order; buckets of 4 elements: [m2], [m1], e[0, 4), e[4, 6).
  auto param = [](const std::string& name, std::vector<int64_t> shape, Algorithm a) {
    PlanParam p;
    p.name = name;
    p.shape = std::move(shape);
    p.algorithm = a;
    p.ns_cost = a == Algorithm::kMuon ? 1.0 : 0.0;
    return p;
  };
  const OwnerPlan plan = make_owner_plan({param("e", {6}, Algorithm::kAdamW), param("m1", {2, 2}, Algorithm::kMuon),
                                          param("m2", {2, 2}, Algorithm::kMuon)},
                                         1);
  const ShardBuckets b = make_shard_buckets(1, plan.shard_len, 16, 4);
  ASSERT_EQ(b.count(), 4);
  const std::vector<double> share = backward_start_shares(plan, b);
  ASSERT_EQ(share.size(), 4u);
  EXPECT_DOUBLE_EQ(share[0], 4.0 / 14);  // m2 alone
  EXPECT_DOUBLE_EQ(share[1], 8.0 / 14);  // m2 and m1
  EXPECT_DOUBLE_EQ(share[2], 1.0);       // e, the first parameter, is final last
  EXPECT_DOUBLE_EQ(share[3], 1.0);
  EXPECT_EQ(backward_start_shares(plan, make_shard_buckets(1, plan.shard_len, 0, 4)), std::vector<double>{1.0});
}

// How early the reduce-scatter can start in backward for the benchmark GPT and the 7B-shaped one in
// 16 MiB buckets (fp32), from the plans alone: printed, and the shares are checked to be ordered.
TEST(ShardBuckets, BackwardStartSharesOfGptPlans) {
  std::printf("%-10s %2s %5s %8s %14s %22s %26s\n", "model", "", "W", "buckets", "bucket 0 at", "half the buckets by",
              "buckets started by 90%");
  for (const bool seven_b : {false, true}) {
    const auto s = seven_b ? orthotron::testing::seven_billion_gpt_shape() : orthotron::testing::benchmark_gpt_shape();
    const auto params = orthotron::testing::gpt_plan_params(s, orthotron::testing::gpt_splits(s));
    for (int w : seven_b ? std::vector<int>{8, 32, 64, 1024} : std::vector<int>{2, 4, 8}) {
      for (const bool element_wise : {false, true}) {
        // Layout B's cut follows its buckets (element_plan.h); layout A's buckets are cut from its shards.
        const int64_t bytes = int64_t{16} << 20;
        const OwnerPlan plan =
            element_wise ? make_element_plan(params, w, element_bucket_elements(bytes, 4)) : make_owner_plan(params, w);
        const ShardBuckets b =
            element_wise ? shard_buckets_at(w, plan.bucket_bounds) : make_shard_buckets(w, plan.shard_len, bytes, 4);
        const std::vector<double> share = backward_start_shares(plan, b);
        ASSERT_EQ(static_cast<int64_t>(share.size()), b.count());
        int64_t by90 = 0;
        for (size_t k = 0; k < share.size(); ++k) {
          ASSERT_GT(share[k], 0.0);
          ASSERT_LE(share[k], 1.0);
          if (k > 0) {
            ASSERT_GE(share[k], share[k - 1]);
          }
          by90 += share[k] <= 0.9;
        }
        if (element_wise) {  // bucket 0 leaves once backward has produced its own parameters, the last ones
          int64_t first = 0;
          const auto buckets = element_buckets(params, plan.bucket_elements);
          for (size_t i : buckets.front()) first += params[i].numel();
          EXPECT_DOUBLE_EQ(share[0], static_cast<double>(first) / static_cast<double>(plan.total_elements));
        }
        std::printf("%-10s %2s %5d %8lld %13.1f%% %21.1f%% %15lld of %lld\n", seven_b ? "7B" : "benchmark",
                    element_wise ? "B" : "A", w, static_cast<long long>(b.count()), 100 * share[0],
                    100 * share[share.size() / 2], static_cast<long long>(by90), static_cast<long long>(b.count()));
      }
    }
  }
}

TEST(ShardBuckets, BadArgumentsAreRefused) {
  EXPECT_THROW(make_shard_buckets(0, 10, 0, 4), InvalidArgument);
  EXPECT_THROW(make_shard_buckets(2, -1, 0, 4), InvalidArgument);
  EXPECT_THROW(make_shard_buckets(2, 10, 0, 0), InvalidArgument);
}

}  // namespace
}  // namespace orthotron
