// test_element_plan.cpp: layout B (element-wise shards) as a pure function: buckets of whole
// parameters in backward order, each cut evenly over the ranks (ZeRO-1's even cut with one bucket),
// so the physical buffer is the backward order bucket by bucket; every element placed exactly once,
// at most one run per parameter and rank, owners equal to layout A's, the Muon all-to-all counts
// equal to an element-by-element recount; `auto` (layout_choice.h) picking the layout that moves
// fewer elements; and the 7B-shaped GPT at W = 8, 64, 1024 and 4096 under A, B and auto, printed.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <set>

#include "base/errors.h"
#include "gpt_fixture.h"
#include "optim/element_plan.h"
#include "optim/layout_choice.h"
#include "optim/shard_buckets.h"

namespace orthotron {
namespace {

using orthotron::testing::GptShape;

void check_invariants(const OwnerPlan& plan) {
  const int64_t w = plan.world;
  // The buckets: whole parameters in backward order, each of n_k elements cut into W pieces of ceil(n_k / W).
  const auto buckets = element_buckets(plan.params, plan.bucket_elements);
  ASSERT_EQ(plan.bucket_bounds.size(), buckets.size() + 1);
  std::vector<size_t> bucket_of_param(plan.params.size());
  std::vector<int64_t> run_start(plan.params.size());  // position of the parameter's element 0 in its bucket's run
  std::vector<int64_t> bucket_total(buckets.size(), 0);
  size_t expected_next = plan.params.size();
  for (size_t k = 0; k < buckets.size(); ++k) {
    for (size_t i : buckets[k]) {
      ASSERT_EQ(i + 1, expected_next) << "buckets follow the backward order";
      expected_next = i;
      bucket_of_param[i] = k;
      run_start[i] = bucket_total[k];
      bucket_total[k] += plan.params[i].numel();
    }
    if (plan.bucket_elements > 0 && k + 1 < buckets.size()) {
      ASSERT_GT(bucket_total[k] + plan.params[buckets[k + 1].front()].numel(), plan.bucket_elements)
          << "a bucket closes only when the next parameter would not fit";
    }
    if (plan.bucket_elements > 0 && buckets[k].size() > 1) {
      ASSERT_LE(bucket_total[k], plan.bucket_elements) << "only a parameter alone exceeds the bucket size";
    }
    ASSERT_EQ(plan.bucket_bounds[k + 1] - plan.bucket_bounds[k], std::max<int64_t>(1, (bucket_total[k] + w - 1) / w));
  }
  ASSERT_EQ(expected_next, 0u);
  ASSERT_EQ(plan.shard_len, plan.bucket_bounds.back());
  if (buckets.size() == 1) {
    ASSERT_EQ(plan.shard_len, std::max<int64_t>(1, (plan.total_elements + w - 1) / w)) << "ZeRO-1's even cut";
  }
  const ShardBuckets phys = shard_buckets_at(plan.world, plan.bucket_bounds);
  std::vector<int64_t> covered(plan.params.size(), 0);
  std::set<std::pair<size_t, int>> runs;
  int64_t last_end = 0;
  std::vector<int64_t> sent(static_cast<size_t>(w), 0), received(static_cast<size_t>(w), 0),
      adamw(static_cast<size_t>(w), 0);
  for (const auto& s : plan.segments) {
    ASSERT_GT(s.count, 0);
    ASSERT_GE(s.buffer_offset, last_end) << "segments sorted by buffer offset, disjoint";
    last_end = s.buffer_offset + s.count;
    ASSERT_EQ(s.rank, s.buffer_offset / plan.shard_len);
    ASSERT_LE(s.buffer_offset + s.count, (s.rank + 1) * plan.shard_len) << "a segment crosses a shard boundary";
    ASSERT_TRUE(runs.insert({s.param, s.rank}).second) << "two runs of one parameter on rank " << s.rank;
    covered[s.param] += s.count;
    // Physically, element e of the parameter sits at W b_k + (its position in bucket k's run).
    const int64_t x = s.buffer_offset - s.rank * plan.shard_len;
    const size_t k = bucket_of_param[s.param];
    ASSERT_EQ(phys.bucket_of(x), static_cast<int64_t>(k));
    ASSERT_EQ(phys.bucket_of(x + s.count - 1), static_cast<int64_t>(k)) << "a segment crosses a bucket";
    ASSERT_EQ(phys.physical(s.rank, x), w * plan.bucket_bounds[k] + run_start[s.param] + s.param_begin)
        << plan.params[s.param].name << ": the physical buffer is the backward order";
    // The all-to-all counts, one element at a time.
    for (int64_t e = 0; e < s.count; ++e) {
      const int owner = plan.owner[s.param];
      if (owner < 0) {
        ++adamw[static_cast<size_t>(s.rank)];
      } else if (owner != s.rank) {
        ++sent[static_cast<size_t>(s.rank)];
        ++received[static_cast<size_t>(owner)];
      }
    }
  }
  int64_t total = 0;
  for (size_t i = 0; i < plan.params.size(); ++i) {
    EXPECT_EQ(covered[i], plan.params[i].numel()) << plan.params[i].name;
    total += covered[i];
  }
  EXPECT_EQ(total, plan.total_elements);
  EXPECT_LT(plan.padding(), static_cast<int64_t>(buckets.size()) * w) << "under W elements per bucket";
  EXPECT_EQ(plan.gather_sent, sent);
  EXPECT_EQ(plan.gather_received, received);
  EXPECT_EQ(plan.adamw_elements_per_rank, adamw);
  // The same owners as layout A.
  EXPECT_EQ(plan.owner, make_owner_plan(plan.params, plan.world).owner);
}

TEST(ElementPlan, SmallGptInvariantsAtManyWorldSizes) {
  const GptShape s;
  const auto params = orthotron::testing::gpt_plan_params(s, orthotron::testing::gpt_splits(s));
  for (int w : {1, 2, 3, 4, 5, 7, 16})
    for (int64_t bucket : {int64_t{0}, int64_t{1}, int64_t{500}, int64_t{3000}, int64_t{1} << 40}) {
      SCOPED_TRACE("W=" + std::to_string(w) + " bucket_elements=" + std::to_string(bucket));
      const OwnerPlan plan = make_element_plan(params, w, bucket);
      check_invariants(plan);
      int64_t state = 0, single = 0;
      for (int r = 0; r < w; ++r) state += plan.state_elements(r);
      for (const auto& p : params) single += (p.algorithm == Algorithm::kMuon ? 1 : 2) * p.numel();
      EXPECT_EQ(state, single) << "every optimizer state element kept exactly once";
      // Holdings: each Muon matrix whole at its owner, each AdamW element once.
      std::vector<int64_t> held(params.size(), 0);
      for (int r = 0; r < w; ++r) {
        for (const auto& h : plan.holdings(r)) {
          held[h.param] += h.count;
          if (plan.owner[h.param] >= 0) {
            EXPECT_EQ(plan.owner[h.param], r);
          }
        }
      }
      for (size_t i = 0; i < params.size(); ++i) EXPECT_EQ(held[i], params[i].numel()) << params[i].name;
      const OwnerPlan a = make_owner_plan(params, w);
      for (int r = 0; r < w; ++r) EXPECT_EQ(a.holdings(r).size(), a.shard_segments(r).size());
      if (w == 1) {
        EXPECT_EQ(plan.gather_sent[0] + plan.gather_received[0], 0);
      }
    }
}

TEST(ElementPlan, DeterministicHashedAndNotLayoutA) {
  const GptShape s;
  const auto params = orthotron::testing::gpt_plan_params(s, orthotron::testing::gpt_splits(s));
  EXPECT_EQ(make_element_plan(params, 4).hash, make_element_plan(params, 4).hash);
  EXPECT_NE(make_element_plan(params, 4, 3000).hash, make_element_plan(params, 4).hash) << "the bounds are hashed";
  EXPECT_EQ(make_element_plan(params, 4, int64_t{1} << 40).hash, make_element_plan(params, 4).hash)
      << "a bucket larger than the model is one bucket: the same plan";
  EXPECT_EQ(make_plan(params, 4, "element_wise", nullptr, 3000).hash, make_element_plan(params, 4, 3000).hash);
  EXPECT_THROW(make_element_plan(params, 4, -1), InvalidArgument);
  EXPECT_EQ(element_bucket_elements(0, 4), 0);
  EXPECT_EQ(element_bucket_elements(1 << 20, 4), 1 << 18);
  EXPECT_EQ(element_bucket_elements(3, 4), 1);
  EXPECT_NE(make_element_plan(params, 4).hash, make_element_plan(params, 3).hash);
  EXPECT_NE(make_element_plan(params, 4).hash, make_owner_plan(params, 4).hash);
  EXPECT_THROW(make_element_plan(params, 0), InvalidArgument);
  auto dup = params;
  dup.push_back(params[0]);
  EXPECT_THROW(make_element_plan(dup, 2), InvalidArgument);
  EXPECT_THROW(compare_layouts(make_owner_plan(params, 4), make_element_plan(params, 2)), InvalidArgument);
  EXPECT_THROW(compare_layouts(make_owner_plan(params, 4), make_owner_plan(params, 4)), InvalidArgument);
  EXPECT_EQ(make_plan(params, 4, "element_wise").hash, make_element_plan(params, 4).hash);
  std::string why;
  EXPECT_EQ(make_plan(params, 4, "auto", &why).layout, ShardLayout::kOwnerAligned) << why;
  EXPECT_THROW(make_plan(params, 4, "zero"), ConfigError);
}

// One 12 x 10 matrix and 40 AdamW elements at W = 4: layout A's shard is the matrix (120), padding
// 4 x 120 - 160 = 320; layout B cuts 40 per shard in backward order (shard 0 the AdamW elements,
// shards 1 to 3 the matrix) and moves all 120 of the matrix's elements to its owner, rank 0, and
// back. Counted by hand.
TEST(ElementPlan, AutoPicksTheLayoutThatMovesFewerElements) {
  PlanParam m;
  m.name = "m";
  m.shape = {12, 10};
  m.ns_cost = muon_ns_cost(m.shape, nullptr);
  PlanParam v;
  v.name = "v";
  v.shape = {40};
  v.algorithm = Algorithm::kAdamW;
  const std::vector<PlanParam> params = {m, v};
  const OwnerPlan a = make_owner_plan(params, 4);
  const OwnerPlan b = make_element_plan(params, 4);
  EXPECT_EQ(a.shard_len, 120);
  EXPECT_EQ(b.shard_len, 40);
  EXPECT_EQ(b.owner[0], 0);
  EXPECT_EQ(b.gather_received[0], 120);  // the matrix's elements in shards 1, 2 and 3
  EXPECT_EQ(b.gather_sent[1], 40);
  EXPECT_EQ(b.gather_sent[0], 0);
  const LayoutCost c = compare_layouts(a, b);
  EXPECT_EQ(c.zero1, 4 * 3 * 40);
  EXPECT_EQ(c.owner_aligned, 4 * 3 * 120);                // 1440
  EXPECT_EQ(c.element_wise, 4 * 3 * 40 + 2 * (0 + 120));  // 720
  EXPECT_EQ(c.choice, ShardLayout::kElementWise);
  EXPECT_NE(c.reason.find("element_wise"), std::string::npos) << c.reason;
  // Small matrices among many AdamW elements: A pads nothing and needs no all-to-all.
  PlanParam big = v;
  big.shape = {4000};
  const LayoutCost d = compare_layouts(make_owner_plan({m, big}, 4), make_element_plan({m, big}, 4));
  EXPECT_EQ(d.owner_aligned, d.zero1);
  EXPECT_GE(d.element_wise, d.owner_aligned);
  EXPECT_EQ(d.choice, ShardLayout::kOwnerAligned) << d.reason;
}

// The 7B-shaped GPT (32 layers, hidden 4096, GQA 32/8, SwiGLU 11008, vocab 32000) without tensor
// parallelism: elements per rank per step against ZeRO-1 AdamW under A, B and auto, NS imbalance,
// and how long building both plans takes.
TEST(ElementPlan, SevenBillionGptUnderLayoutsAAndBAndAuto) {
  const GptShape s = orthotron::testing::seven_billion_gpt_shape();
  const auto params = orthotron::testing::gpt_plan_params(s, orthotron::testing::gpt_splits(s));
  std::printf("%6s %10s %10s %10s %14s %10s %14s %12s\n", "W", "A/ZeRO-1", "B/ZeRO-1", "auto", "A padding",
              "NS max/mean", "B all-to-all", "plans (ms)");
  std::map<int, LayoutCost> costs;
  for (int w : {8, 64, 1024, 4096}) {
    const auto start = std::chrono::steady_clock::now();
    const OwnerPlan a = make_owner_plan(params, w);
    const OwnerPlan b = make_element_plan(params, w);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    const LayoutCost c = compare_layouts(a, b);
    EXPECT_EQ(a.ns_imbalance(), b.ns_imbalance()) << "the same owners";
    EXPECT_EQ(c.choice, c.element_wise < c.owner_aligned ? ShardLayout::kElementWise : ShardLayout::kOwnerAligned);
    std::printf("%6d %10.3f %10.3f %10s %13.2f%% %10.2f %14.3f %12.1f\n", w, c.ratio(c.owner_aligned),
                c.ratio(c.element_wise), c.choice == ShardLayout::kOwnerAligned ? "A" : "B", 100 * a.padding_ratio(),
                a.ns_imbalance(), c.ratio(c.element_wise - 4 * (w - 1) * b.shard_len), ms);
    if (w == 4096) std::printf("W=4096 auto: %s\n", c.reason.c_str());
    costs.emplace(w, c);
  }
  // Where A pads nothing it moves exactly ZeRO-1's elements; at 1024 and 4096 B moves far fewer.
  EXPECT_EQ(costs.at(8).owner_aligned, costs.at(8).zero1);
  EXPECT_EQ(costs.at(1024).choice, ShardLayout::kElementWise);
  EXPECT_EQ(costs.at(4096).choice, ShardLayout::kElementWise);
  EXPECT_LT(costs.at(4096).ratio(costs.at(4096).element_wise), costs.at(4096).ratio(costs.at(4096).owner_aligned));
}

// Layout B's buckets are runs of the backward order, so bucket k's reduce-scatter can start once
// backward has produced exactly the parameters of buckets 0..k (backward_start_shares).
TEST(ElementPlan, BucketsStartAsBackwardPassesThem) {
  const GptShape s;
  const auto params = orthotron::testing::gpt_plan_params(s, orthotron::testing::gpt_splits(s));
  for (int w : {1, 2, 4, 7}) {
    const OwnerPlan plan = make_element_plan(params, w, 3000);
    const auto buckets = element_buckets(params, 3000);
    ASSERT_GT(buckets.size(), 3u);
    const std::vector<double> share = backward_start_shares(plan, shard_buckets_at(w, plan.bucket_bounds));
    ASSERT_EQ(share.size(), buckets.size());
    int64_t done = 0;
    for (size_t k = 0; k < buckets.size(); ++k) {
      for (size_t i : buckets[k]) done += params[i].numel();
      EXPECT_DOUBLE_EQ(share[k], static_cast<double>(done) / static_cast<double>(plan.total_elements))
          << "W=" << w << " bucket " << k;
    }
    EXPECT_LT(share.front(), 0.5);
  }
}

// The 7B-shaped GPT under layout B in 16 MiB fp32 buckets (4 Mi elements) against one bucket:
// the busiest rank's elements per step relative to ZeRO-1, the padding the per-bucket cut adds, the
// share of backward after which the first bucket and half the buckets can start, and the plan's time.
TEST(ElementPlan, SevenBillionGptLayoutBInBuckets) {
  const GptShape s = orthotron::testing::seven_billion_gpt_shape();
  const auto params = orthotron::testing::gpt_plan_params(s, orthotron::testing::gpt_splits(s));
  const int64_t bucket = element_bucket_elements(16 << 20, 4);
  std::printf("%6s %12s %12s %8s %14s %10s %10s %10s %10s\n", "W", "B/ZeRO-1 1", "B/ZeRO-1 K", "K", "padding", "first",
              "half", "plan (ms)", "segments");
  for (int w : {8, 64, 1024, 4096}) {
    const OwnerPlan a = make_owner_plan(params, w), one = make_element_plan(params, w);
    const auto start = std::chrono::steady_clock::now();
    const OwnerPlan b = make_element_plan(params, w, bucket);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    const LayoutCost c1 = compare_layouts(a, one), ck = compare_layouts(a, b);
    const std::vector<double> share = backward_start_shares(b, shard_buckets_at(w, b.bucket_bounds));
    std::printf("%6d %12.4f %12.4f %8zu %14lld %9.1f%% %9.1f%% %10.1f %10zu\n", w, c1.ratio(c1.element_wise),
                ck.ratio(ck.element_wise), share.size(), static_cast<long long>(b.padding()), 100 * share.front(),
                100 * share[share.size() / 2], ms, b.segments.size());
    EXPECT_LT(b.padding(), static_cast<int64_t>(share.size()) * w);
    EXPECT_LT(ck.ratio(ck.element_wise), 1.01 * c1.ratio(c1.element_wise)) << "W=" << w << ": the cut moves ~ the same";
    EXPECT_LT(share.front(), 0.03) << "W=" << w << ": the first bucket is the output head, first in backward";
    EXPECT_LT(ms, 1000.0);
  }
}

}  // namespace
}  // namespace orthotron
