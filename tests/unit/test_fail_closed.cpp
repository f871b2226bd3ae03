// test_fail_closed.cpp: the guards that keep Muon from silently becoming something else: the
// Newton-Schulz plan audit (every step's NS work per group equals the plan's prediction), logical
// shapes for routing and splits (a shard's, a flattened or a reshaped shape is refused), and plans
// computed from names and shapes alone equal to the containers'.
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "base/debug_checks.h"
#include "base/errors.h"
#include "gpt_fixture.h"
#include "optim/muon_with_adamw.h"
#include "optim/ns_audit.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::contains;
using orthotron::testing::GptShape;
using orthotron::testing::thrown_message;

void set_random_grads(NamedParameters& params, uint64_t seed) {
  at::manual_seed(seed);
  for (auto& p : params) p.tensor.mutable_grad() = at::randn(p.tensor.sizes());
}

std::vector<size_t> all_indices(size_t n) {
  std::vector<size_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = i;
  return out;
}

// The default GptShape (hidden 32, 4 heads of 8, 2 KV heads, ffn 48, 2 layers). Per layer, with
// QKV split: q [32,32], k [16,32], v [16,32], proj [32,32], gate [48,32], up [48,32], fc2 [32,48]:
// 7 matrices of 4 distinct shapes. Without the QKV split the fused [64,32] replaces q, k, v: 5.
TEST(NsAudit, TheContainerRunsExactlyThePlannedMatricesPerGroup) {
  ASSERT_TRUE(debug_checks_enabled()) << "the test main turns debug checks on";
  const GptShape s;
  for (const auto& [granularity, matrices] : {std::pair{SplitGranularity::kQkv, 14}, {SplitGranularity::kNone, 10}}) {
    NamedParameters params = orthotron::testing::gpt_params(s, 3);
    MuonWithAdamW opt(params, default_groups(), default_routing_rules(),
                      orthotron::testing::gpt_splits(s, granularity));
    set_random_grads(params, 4);
    opt.step();  // audits itself: an InvariantError would fail the test here
    const NsCounts want = {{0, NsGroupCount{matrices, 4}}};
    EXPECT_EQ(opt.last_ns_counts(), want) << to_string(granularity);
    EXPECT_EQ(expected_ns_counts(opt.plan(), all_indices(params.size())), want) << to_string(granularity);
  }
}

TEST(NsAudit, ParametersWithoutGradientsLeaveThePrediction) {
  const GptShape s;
  NamedParameters params = orthotron::testing::gpt_params(s, 3);
  MuonWithAdamW opt(params, default_groups(), default_routing_rules(), orthotron::testing::gpt_splits(s));
  set_random_grads(params, 5);
  for (auto& p : params) {
    if (p.name.rfind("decoder.layers.1.", 0) == 0) p.tensor.mutable_grad() = at::Tensor();
  }
  opt.step();
  EXPECT_EQ(opt.last_ns_counts(), (NsCounts{{0, NsGroupCount{7, 4}}}));
}

TEST(NsAudit, AMismatchIsAnInvariantErrorNamingGroupAndCounts) {
  const auto groups = default_groups();
  const std::string msg = thrown_message<InvariantError>([&] {
    check_ns_counts({{0, NsGroupCount{14, 4}}}, {{0, NsGroupCount{12, 3}}}, groups, "MuonWithAdamW::step");
  });
  EXPECT_TRUE(contains(msg, "group 'muon'")) << msg;
  EXPECT_TRUE(contains(msg, "14 matrices in 4")) << msg;
  EXPECT_TRUE(contains(msg, "12 matrices in 3")) << msg;
  EXPECT_TRUE(contains(msg, "MuonWithAdamW::step")) << msg;
  // A group the plan expects to run but which ran nothing (Muon silently skipped), and the reverse.
  EXPECT_THROW(check_ns_counts({{0, NsGroupCount{1, 1}}}, {}, groups, "x"), InvariantError);
  EXPECT_THROW(check_ns_counts({}, {{0, NsGroupCount{1, 1}}}, groups, "x"), InvariantError);
  EXPECT_NO_THROW(check_ns_counts({{0, NsGroupCount{3, 2}}}, {{0, NsGroupCount{3, 2}}}, groups, "x"));
}

TEST(LogicalShapes, AStackReshapedAfterConstructionIsRefusedNotOrthogonalizedAsOneMatrix) {
  // A [4, 8, 16] expert stack is 4 matrices. Viewed as [32, 16] it would silently become one.
  at::Tensor stack = at::randn({4, 8, 16});
  NamedParameters params = {{"layers.0.moe.experts", stack}};
  MuonWithAdamW opt(params);
  {
    c10::NoGradGuard no_grad;
    stack.set_(stack.storage(), 0, {32, 16});
  }
  stack.mutable_grad() = at::randn({32, 16});
  const std::string msg = thrown_message<ShapeError>([&] { opt.step(); });
  EXPECT_TRUE(contains(msg, "'layers.0.moe.experts'")) << msg;
  EXPECT_TRUE(contains(msg, "[32, 16]")) << msg;
  EXPECT_TRUE(contains(msg, "logical shape [4, 8, 16]")) << msg;
}

TEST(LogicalShapes, AFullModelSplitRefusesAShardShapedParameter) {
  // Tensor parallelism halves the QKV rows on each rank; the model's split covers all of them.
  const GptShape s;
  NamedParameters params = orthotron::testing::gpt_params(s, 1);
  for (auto& p : params) {
    if (p.name == "decoder.layers.0.self_attention.linear_qkv.weight") {
      p.tensor = at::randn({p.tensor.size(0) / 2, p.tensor.size(1)}).requires_grad_(true);
    }
  }
  const std::string msg = thrown_message<ShapeError>(
      [&] { MuonWithAdamW opt(params, default_groups(), default_routing_rules(), orthotron::testing::gpt_splits(s)); });
  EXPECT_TRUE(contains(msg, "'decoder.layers.0.self_attention.linear_qkv.weight'")) << msg;
  EXPECT_TRUE(contains(msg, "covers 64 rows")) << msg;
  EXPECT_TRUE(contains(msg, "[32, 32]")) << msg;
}

TEST(LogicalShapes, AFlattenedMatrixWouldRouteToAdamWSoRoutingTakesLogicalShapes) {
  // Why plans take logical shapes: the same name with a flattened shape lands in AdamW.
  const auto groups = default_groups();
  const auto full = route_parameters({{"layers.0.mlp.fc.weight", {64, 16}}}, groups, default_routing_rules());
  EXPECT_EQ(groups[full[0].group_index].algorithm, Algorithm::kMuon);
  const std::string msg = thrown_message<RoutingError>([&] {
    route_parameters({{"layers.0.mlp.fc.weight", {1024}}}, groups, default_routing_rules());
  });
  EXPECT_TRUE(contains(msg, "Muon group 'muon' claims no parameter")) << msg;
}

TEST(ShapeOnlyPlans, EqualTheContainersPlanWithoutAnyTensor) {
  const GptShape s;
  const auto splits = orthotron::testing::gpt_splits(s);
  NamedParameters params = orthotron::testing::gpt_params(s, 2);
  MuonWithAdamW opt(params, default_groups(), default_routing_rules(), splits);
  const auto from_shapes = orthotron::testing::gpt_plan_params(s, splits);
  ASSERT_EQ(from_shapes.size(), opt.plan().size());
  for (size_t i = 0; i < from_shapes.size(); ++i) {
    EXPECT_EQ(from_shapes[i].name, opt.plan()[i].name);
    EXPECT_EQ(from_shapes[i].shape, opt.plan()[i].shape);
    EXPECT_EQ(from_shapes[i].algorithm, opt.plan()[i].algorithm);
    EXPECT_EQ(from_shapes[i].group, opt.plan()[i].group);
    EXPECT_EQ(from_shapes[i].ns_cost, opt.plan()[i].ns_cost);
  }
  for (int w : {1, 3, 64}) {
    EXPECT_EQ(make_owner_plan(from_shapes, w).hash, make_owner_plan(opt.plan(), w).hash) << "W=" << w;
  }
}

}  // namespace
}  // namespace orthotron
