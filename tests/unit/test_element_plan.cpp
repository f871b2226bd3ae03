// test_element_plan.cpp: layout B (element-wise shards) as a pure function: the even cut of ZeRO-1,
// every element placed exactly once, owners equal to layout A's, the Muon all-to-all counts equal
// to an element-by-element recount; `auto` (layout_choice.h) picking the layout that moves fewer
// elements; and the 7B-shaped GPT at W = 8, 64, 1024 and 4096 under A, B and auto, printed.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <map>

#include "base/errors.h"
#include "gpt_fixture.h"
#include "optim/element_plan.h"
#include "optim/layout_choice.h"

namespace orthotron {
namespace {

using orthotron::testing::GptShape;

void check_invariants(const OwnerPlan& plan) {
  const int64_t w = plan.world;
  ASSERT_EQ(plan.shard_len, std::max<int64_t>(1, (plan.total_elements + w - 1) / w)) << "ZeRO-1's even cut";
  std::vector<int64_t> covered(plan.params.size(), 0);
  int64_t cursor = 0;
  std::vector<int64_t> sent(static_cast<size_t>(w), 0), received(static_cast<size_t>(w), 0),
      adamw(static_cast<size_t>(w), 0);
  for (const auto& s : plan.segments) {
    ASSERT_GT(s.count, 0);
    ASSERT_EQ(s.buffer_offset, cursor) << "parameters lie back to back in parameter order";
    cursor += s.count;
    ASSERT_EQ(s.rank, s.buffer_offset / plan.shard_len);
    ASSERT_LE(s.buffer_offset + s.count, (s.rank + 1) * plan.shard_len) << "a segment crosses a shard boundary";
    ASSERT_EQ(s.param_begin, covered[s.param]);
    covered[s.param] += s.count;
    // The all-to-all counts, one element at a time.
    for (int64_t k = 0; k < s.count; ++k) {
      const int owner = plan.owner[s.param];
      if (owner < 0) {
        ++adamw[static_cast<size_t>(s.rank)];
      } else if (owner != s.rank) {
        ++sent[static_cast<size_t>(s.rank)];
        ++received[static_cast<size_t>(owner)];
      }
    }
  }
  EXPECT_EQ(cursor, plan.total_elements);
  for (size_t i = 0; i < plan.params.size(); ++i) EXPECT_EQ(covered[i], plan.params[i].numel()) << plan.params[i].name;
  EXPECT_EQ(plan.gather_sent, sent);
  EXPECT_EQ(plan.gather_received, received);
  EXPECT_EQ(plan.adamw_elements_per_rank, adamw);
  // The same owners as layout A.
  EXPECT_EQ(plan.owner, make_owner_plan(plan.params, plan.world).owner);
}

TEST(ElementPlan, SmallGptInvariantsAtManyWorldSizes) {
  const GptShape s;
  const auto params = orthotron::testing::gpt_plan_params(s, orthotron::testing::gpt_splits(s));
  for (int w : {1, 2, 3, 4, 5, 7, 16}) {
    SCOPED_TRACE("W=" + std::to_string(w));
    const OwnerPlan plan = make_element_plan(params, w);
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
// 4 x 120 - 160 = 320; layout B cuts 40 per shard and moves 80 of the matrix's 120 elements to its
// owner and back. Counted by hand.
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
  EXPECT_EQ(b.gather_received[0], 80);  // the matrix's elements in shards 1 and 2
  EXPECT_EQ(b.gather_sent[1], 40);
  const LayoutCost c = compare_layouts(a, b);
  EXPECT_EQ(c.zero1, 4 * 3 * 40);
  EXPECT_EQ(c.owner_aligned, 4 * 3 * 120);               // 1440
  EXPECT_EQ(c.element_wise, 4 * 3 * 40 + 2 * (0 + 80));  // 640
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

}  // namespace
}  // namespace orthotron
