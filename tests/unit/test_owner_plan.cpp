// test_owner_plan.cpp: the owner-aligned layout as a pure function: every element placed exactly
// once, owners balanced and deterministic, the hash sensitive to what must agree; and the plan of a
// 7B-shaped GPT at W = 8, 64 and 1024 with its padding and NS imbalance printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <random>

#include "base/errors.h"
#include "gpt_fixture.h"

namespace orthotron {
namespace {

using orthotron::testing::GptShape;

void check_invariants(const OwnerPlan& plan) {
  std::vector<int64_t> covered(plan.params.size(), 0);
  int64_t cursor = -1;
  for (const auto& s : plan.segments) {
    ASSERT_GT(s.count, 0);
    ASSERT_GE(s.buffer_offset, cursor) << "segments overlap or are out of order";
    cursor = s.buffer_offset + s.count;
    ASSERT_LE(cursor, plan.buffer_len());
    ASSERT_EQ(s.rank, s.buffer_offset / plan.shard_len);
    ASSERT_LE(s.buffer_offset + s.count, (s.rank + 1) * plan.shard_len) << "a segment crosses a shard boundary";
    ASSERT_EQ(s.param_begin, covered[s.param]) << plan.params[s.param].name << " elements out of order";
    covered[s.param] += s.count;
    if (plan.owner[s.param] >= 0) {
      EXPECT_EQ(s.rank, plan.owner[s.param]);
      EXPECT_EQ(s.count, plan.params[s.param].numel()) << "a Muon matrix must sit whole in its owner's shard";
    }
  }
  for (size_t i = 0; i < plan.params.size(); ++i) EXPECT_EQ(covered[i], plan.params[i].numel()) << plan.params[i].name;
  // Backward order: within each shard, segments in reverse parameter order; the AdamW walk runs
  // through the parameters in reverse order across the shards.
  int last_rank = -1;
  size_t last_in_shard = 0, last_adamw = plan.params.size(), adamw_in_shard = plan.params.size();
  for (const auto& s : plan.segments) {
    if (s.rank != last_rank) {
      last_rank = s.rank;
      last_in_shard = plan.params.size();
      if (adamw_in_shard < plan.params.size()) last_adamw = adamw_in_shard;
    }
    ASSERT_LT(s.param, last_in_shard) << plan.params[s.param].name << ": shard " << s.rank
                                      << " not in reverse parameter order";
    last_in_shard = s.param;
    if (plan.owner[s.param] < 0) {
      ASSERT_LE(s.param, last_adamw) << plan.params[s.param].name << ": the AdamW walk is not in reverse order";
      adamw_in_shard = s.param;  // the shard's smallest AdamW parameter (its segments descend)
    }
  }
  const int64_t max_muon = *std::max_element(plan.muon_elements_per_rank.begin(), plan.muon_elements_per_rank.end());
  EXPECT_EQ(plan.shard_len, std::max<int64_t>({max_muon, (plan.total_elements + plan.world - 1) / plan.world, 1}));
}

TEST(OwnerPlan, SmallGptInvariantsAtManyWorldSizes) {
  const GptShape s;
  const auto params = orthotron::testing::gpt_plan_params(s, orthotron::testing::gpt_splits(s));
  for (int w : {1, 2, 3, 4, 5, 8, 16, 100}) {
    const OwnerPlan plan = make_owner_plan(params, w);
    SCOPED_TRACE("W=" + std::to_string(w));
    check_invariants(plan);
    int muon = 0, owners_used = 0;
    std::vector<int> owned(static_cast<size_t>(w), 0);
    for (size_t i = 0; i < params.size(); ++i) {
      if (plan.owner[i] >= 0) {
        ++muon;
        ++owned[static_cast<size_t>(plan.owner[i])];
      }
    }
    for (int c : owned) owners_used += c > 0;
    EXPECT_EQ(owners_used, std::min(w, muon)) << "LPT leaves a rank idle while another owns two";
  }
}

TEST(OwnerPlan, DeterministicAndLoadsIndependentOfInputOrder) {
  const GptShape s;
  auto params = orthotron::testing::gpt_plan_params(s, orthotron::testing::gpt_splits(s));
  const OwnerPlan a = make_owner_plan(params, 4), b = make_owner_plan(params, 4);
  EXPECT_EQ(a.hash, b.hash);
  EXPECT_EQ(a.owner, b.owner);
  std::map<std::string, int> owner_of;
  for (size_t i = 0; i < params.size(); ++i) owner_of[params[i].name] = a.owner[i];
  // Another input order moves only ties (which of equally loaded ranks takes a matrix, by depth):
  // the per-rank NS costs and Muon element counts are the same multiset.
  std::mt19937 rng(3);
  std::shuffle(params.begin(), params.end(), rng);
  const OwnerPlan c = make_owner_plan(params, 4);
  auto loads = [](const OwnerPlan& p) {
    std::vector<std::pair<double, int64_t>> out;
    for (size_t r = 0; r < p.ns_cost_per_rank.size(); ++r)
      out.emplace_back(p.ns_cost_per_rank[r], p.muon_elements_per_rank[r]);
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(loads(a), loads(c));
}

TEST(OwnerPlan, TiedOwnersSpreadOverDepth) {
  // The benchmark GPT (8 identical layers) at 8 ranks: plain LPT with ties to the lower rank gives
  // rank r all four matrices of layer r; spreading by depth (greedy, matrix by matrix, so the last
  // of a round takes the rank that is left) gives every rank matrices of 3 or 4 layers.
  const GptShape s = orthotron::testing::benchmark_gpt_shape();
  const auto params = orthotron::testing::gpt_plan_params(s, orthotron::testing::gpt_splits(s));
  const OwnerPlan plan = make_owner_plan(params, 8);
  std::map<int, std::map<std::string, int>> layers;  // rank -> layer prefix -> matrices
  for (size_t i = 0; i < params.size(); ++i) {
    if (plan.owner[i] < 0) continue;
    const std::string& name = params[i].name;
    const size_t dot = name.find('.', std::string("decoder.layers.").size());
    ++layers[plan.owner[i]][name.substr(0, dot)];
  }
  ASSERT_EQ(layers.size(), 8u);
  for (const auto& [rank, per_layer] : layers) {
    EXPECT_GE(per_layer.size(), 3u) << "rank " << rank << " owns matrices of " << per_layer.size() << " layers";
  }
}

TEST(OwnerPlan, HashChangesWithShapesNamesRolesAndWorld) {
  const GptShape s;
  const auto params = orthotron::testing::gpt_plan_params(s, orthotron::testing::gpt_splits(s));
  const uint64_t base = make_owner_plan(params, 4).hash;
  EXPECT_NE(make_owner_plan(params, 3).hash, base);
  auto shape = params;
  shape[3].shape[0] += 1;
  EXPECT_NE(make_owner_plan(shape, 4).hash, base);
  auto name = params;
  name[3].name += "_";
  EXPECT_NE(make_owner_plan(name, 4).hash, base);
  auto role = params;
  ASSERT_EQ(role[4].algorithm, Algorithm::kMuon) << role[4].name;
  role[4].algorithm = Algorithm::kAdamW;
  role[4].ns_cost = 0;
  EXPECT_NE(make_owner_plan(role, 4).hash, base);
  EXPECT_THROW(make_owner_plan(params, 0), InvalidArgument);
  auto dup = params;
  dup.push_back(params[0]);
  EXPECT_THROW(make_owner_plan(dup, 2), InvalidArgument);
}

TEST(OwnerPlan, EdgeShapesAndMoreRanksThanMatrices) {
  std::vector<PlanParam> params;
  for (auto shape : std::vector<std::vector<int64_t>>{{1, 7}, {7, 1}, {13, 17}, {3}}) {
    PlanParam p;
    p.name = "p" + std::to_string(params.size());
    p.shape = shape;
    p.algorithm = shape.size() == 2 ? Algorithm::kMuon : Algorithm::kAdamW;
    p.ns_cost = p.algorithm == Algorithm::kMuon ? muon_ns_cost(shape, nullptr) : 0;
    params.push_back(p);
  }
  const OwnerPlan plan = make_owner_plan(params, 6);
  check_invariants(plan);
  EXPECT_EQ(plan.shard_len, 13 * 17);
  EXPECT_EQ(std::count(plan.muon_elements_per_rank.begin(), plan.muon_elements_per_rank.end(), 0), 3);
}

// The 7B-shaped GPT of the issue: 32 layers, hidden 4096, GQA 32/8 heads, SwiGLU 11008, vocab 32000.
TEST(OwnerPlan, SevenBillionGptAtScale) {
  const GptShape s = orthotron::testing::seven_billion_gpt_shape();
  const auto params = orthotron::testing::gpt_plan_params(s, orthotron::testing::gpt_splits(s));
  int64_t single_state = 0, largest_muon = 0;
  for (const auto& p : params) {
    single_state += (p.algorithm == Algorithm::kMuon ? 1 : 2) * p.numel();
    if (p.algorithm == Algorithm::kMuon) largest_muon = std::max(largest_muon, p.numel());
  }
  std::printf("7B GPT: P=%lld parameters, largest Muon matrix %lld elements, single-process state %lld elements\n",
              static_cast<long long>(make_owner_plan(params, 1).total_elements), static_cast<long long>(largest_muon),
              static_cast<long long>(single_state));
  std::printf("%6s %12s %10s %14s %16s %16s\n", "W", "S", "padding", "NS max/mean", "state max/(1/W)",
              "state min/(1/W)");
  std::map<int, OwnerPlan> plans;
  for (int w : {8, 64, 1024}) {
    const OwnerPlan plan = make_owner_plan(params, w);
    check_invariants(plan);
    int64_t lo = plan.state_elements(0), hi = lo;
    for (int r = 1; r < w; ++r) {
      lo = std::min(lo, plan.state_elements(r));
      hi = std::max(hi, plan.state_elements(r));
    }
    const double ideal = static_cast<double>(single_state) / w;
    std::printf("%6d %12lld %9.2f%% %14.3f %16.3f %16.3f\n", w, static_cast<long long>(plan.shard_len),
                100 * plan.padding_ratio(), plan.ns_imbalance(), hi / ideal, lo / ideal);
    plans.emplace(w, plan);
  }
  // W=8: the layout is ZeRO-1 plus almost nothing, NS well balanced, state about 1/W per rank.
  EXPECT_LT(plans.at(8).padding_ratio(), 0.01);
  EXPECT_LT(plans.at(8).ns_imbalance(), 1.05);
  // W=1024: S is set by the largest matrix (fused gate/up, 2 x 11008 x 4096), so the padding
  // explodes and most ranks own no matrix; this is where layout B (element-wise shards with
  // gather-to-owner) must take over.
  EXPECT_EQ(plans.at(1024).shard_len, largest_muon);
  EXPECT_GT(plans.at(1024).padding_ratio(), 5.0);
}

}  // namespace
}  // namespace orthotron
