// test_split_registry.cpp: fused-parameter splits: the layouts (Megatron's interleaved GQA, block
// [Q;K;V], gate/up), split-then-merge identity, granularities, errors, and Muon on a fused tensor
// with splits equal to Muon on the separate matrices.
#include <gtest/gtest.h>

#include "base/errors.h"
#include "optim/muon_with_adamw.h"

namespace orthotron {
namespace {

// Builds a Megatron-interleaved fused QKV from separate Q [H*d, h], K [G*d, h], V [G*d, h].
at::Tensor interleave(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t heads, int64_t groups,
                      int64_t d) {
  const int64_t qpg = heads / groups;
  std::vector<at::Tensor> rows;
  for (int64_t g = 0; g < groups; ++g) {
    rows.push_back(q.narrow(0, g * qpg * d, qpg * d));
    rows.push_back(k.narrow(0, g * d, d));
    rows.push_back(v.narrow(0, g * d, d));
  }
  return at::cat(rows, 0);
}

TEST(SplitRegistry, InterleavedGqaPartsAreTheRealQKV) {
  const int64_t heads = 8, groups = 2, d = 4, hidden = 16;
  const at::Tensor q = at::randn({heads * d, hidden}), k = at::randn({groups * d, hidden}),
                   v = at::randn({groups * d, hidden});
  const at::Tensor fused = interleave(q, k, v, heads, groups, d);
  const ParamSplit s = qkv_split_interleaved(heads, groups, d, SplitGranularity::kQkv);
  ASSERT_EQ(s.parts.size(), 3u);
  EXPECT_TRUE(at::equal(split_gather(fused, s.parts[0]), q));
  EXPECT_TRUE(at::equal(split_gather(fused, s.parts[1]), k));
  EXPECT_TRUE(at::equal(split_gather(fused, s.parts[2]), v));
  // A contiguous row slice is NOT all of Q in this layout.
  EXPECT_FALSE(at::equal(fused.narrow(0, 0, heads * d), q));
  const ParamSplit per_head = qkv_split_interleaved(heads, groups, d, SplitGranularity::kPerHead);
  EXPECT_EQ(per_head.parts.size(), static_cast<size_t>(heads + 2 * groups));
  EXPECT_TRUE(at::equal(split_gather(fused, per_head.parts[5]), q.narrow(0, 5 * d, d)));
  EXPECT_EQ(per_head.parts[heads].name, "k.head0");
  EXPECT_EQ(qkv_split_interleaved(heads, groups, d, SplitGranularity::kNone).parts.size(), 1u);
}

TEST(SplitRegistry, BlockLayoutAndGateUp) {
  const at::Tensor q = at::randn({12, 6}), k = at::randn({4, 6}), v = at::randn({4, 6});
  const at::Tensor fused = at::cat({q, k, v}, 0);
  const ParamSplit s = qkv_split_block(6, 2, 2, SplitGranularity::kQkv);
  EXPECT_TRUE(at::equal(split_gather(fused, s.parts[0]), q));
  EXPECT_TRUE(at::equal(split_gather(fused, s.parts[2]), v));
  const at::Tensor gu = at::randn({10, 3});
  const ParamSplit g = gate_up_split(5);
  EXPECT_TRUE(at::equal(split_gather(gu, g.parts[0]), gu.narrow(0, 0, 5)));
  EXPECT_TRUE(at::equal(split_gather(gu, g.parts[1]), gu.narrow(0, 5, 5)));
}

TEST(SplitRegistry, SplitThenMergeIsIdentity) {
  for (auto gran : {SplitGranularity::kNone, SplitGranularity::kQkv, SplitGranularity::kPerHead}) {
    for (const ParamSplit& s : {qkv_split_interleaved(6, 3, 4, gran), qkv_split_block(6, 2, 4, gran)}) {
      const at::Tensor fused = at::randn({s.rows, 5});
      at::Tensor merged = at::full_like(fused, std::nan(""));
      for (const auto& p : s.parts) split_scatter(merged, p, split_gather(fused, p));
      EXPECT_TRUE(at::equal(merged, fused)) << to_string(gran);
    }
  }
}

TEST(SplitRegistry, Errors) {
  SplitRegistry reg;
  reg.add("qkv", qkv_split_interleaved(4, 2, 2, SplitGranularity::kQkv));
  try {
    reg.check_fits("qkv", {15, 4});
    ADD_FAILURE() << "expected ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("'qkv'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("16 rows"), std::string::npos) << e.what();
  }
  EXPECT_THROW(reg.add("qkv", gate_up_split(2)), InvalidArgument);
  ParamSplit overlapping = gate_up_split(3);
  overlapping.parts[1].rows[0] = 0;
  EXPECT_THROW(reg.add("bad", overlapping), InvalidArgument);
  EXPECT_THROW(qkv_split_interleaved(6, 4, 2, SplitGranularity::kQkv), InvalidArgument);
  EXPECT_THROW(parse_split_granularity("heads"), InvalidArgument);
  EXPECT_EQ(parse_split_granularity("per_head"), SplitGranularity::kPerHead);
  // A split on a parameter routed to AdamW, or naming no parameter, is a routing error.
  SplitRegistry on_bias;
  on_bias.add("fc.bias", gate_up_split(2));
  EXPECT_THROW(MuonWithAdamW({{"fc.bias", at::zeros({4})}, {"fc.weight", at::zeros({4, 4})}}, default_groups(),
                             default_routing_rules(), on_bias),
               RoutingError);
  SplitRegistry ghost;
  ghost.add("ghost.weight", gate_up_split(2));
  EXPECT_THROW(MuonWithAdamW({{"fc.weight", at::zeros({4, 4})}}, default_groups(), default_routing_rules(), ghost),
               RoutingError);
}

// Muon on fused tensors with splits equals Muon on separate Q, K, V (and gate, up) parameters,
// bitwise, over several steps: the same element-wise updates, the same per-part NS and scale.
TEST(SplitRegistry, FusedWithSplitsEqualsSeparateParameters) {
  for (auto gran : {SplitGranularity::kQkv, SplitGranularity::kPerHead}) {
    const int64_t heads = 4, groups = 2, d = 4, hidden = 16, ffn = 24;
    at::manual_seed(7);
    const at::Tensor q0 = at::randn({heads * d, hidden}), k0 = at::randn({groups * d, hidden}),
                     v0 = at::randn({groups * d, hidden}), gate0 = at::randn({ffn, hidden}),
                     up0 = at::randn({ffn, hidden});
    NamedParameters fused = {{"attn.qkv.weight", interleave(q0, k0, v0, heads, groups, d).requires_grad_(true)},
                             {"mlp.fc1.weight", at::cat({gate0, up0}, 0).requires_grad_(true)}};
    SplitRegistry reg;
    reg.add("attn.qkv.weight", qkv_split_interleaved(heads, groups, d, gran));
    reg.add("mlp.fc1.weight", gate_up_split(ffn));
    const ParamSplit& qkv = *reg.find("attn.qkv.weight");
    NamedParameters separate;
    for (const auto& part : qkv.parts) {
      separate.push_back({"attn." + part.name, split_gather(fused[0].tensor.detach(), part).requires_grad_(true)});
    }
    separate.push_back({"mlp.gate", gate0.clone().requires_grad_(true)});
    separate.push_back({"mlp.up", up0.clone().requires_grad_(true)});
    auto groups_cfg = default_groups();
    groups_cfg[0].muon.weight_decay = 0.1;
    groups_cfg[0].muon.scale_mode = ScaleMode::kMatchRmsAdamW;
    MuonWithAdamW a(fused, groups_cfg, default_routing_rules(), reg);
    MuonWithAdamW b(separate, groups_cfg);
    for (int step = 0; step < 5; ++step) {
      at::manual_seed(100 + step);
      const at::Tensor g_qkv = at::randn(fused[0].tensor.sizes()), g_fc1 = at::randn(fused[1].tensor.sizes());
      fused[0].tensor.mutable_grad() = g_qkv;
      fused[1].tensor.mutable_grad() = g_fc1;
      for (size_t p = 0; p < qkv.parts.size(); ++p)
        separate[p].tensor.mutable_grad() = split_gather(g_qkv, qkv.parts[p]);
      separate[qkv.parts.size()].tensor.mutable_grad() = g_fc1.narrow(0, 0, ffn).clone();
      separate[qkv.parts.size() + 1].tensor.mutable_grad() = g_fc1.narrow(0, ffn, ffn).clone();
      a.step();
      b.step();
    }
    for (size_t p = 0; p < qkv.parts.size(); ++p) {
      EXPECT_TRUE(at::equal(split_gather(fused[0].tensor.detach(), qkv.parts[p]), separate[p].tensor))
          << to_string(gran) << " part " << qkv.parts[p].name;
    }
    EXPECT_TRUE(at::equal(fused[1].tensor.narrow(0, 0, ffn), separate[qkv.parts.size()].tensor));
    EXPECT_TRUE(at::equal(fused[1].tensor.narrow(0, ffn, ffn), separate[qkv.parts.size() + 1].tensor));
    // And the split matters: without it, the fused result differs.
    NamedParameters unsplit = {{"attn.qkv.weight", interleave(q0, k0, v0, heads, groups, d).requires_grad_(true)}};
    MuonWithAdamW c(unsplit, groups_cfg);
    at::manual_seed(100);
    unsplit[0].tensor.mutable_grad() = at::randn(unsplit[0].tensor.sizes());
    c.step();
    NamedParameters one = {{"attn.qkv.weight", interleave(q0, k0, v0, heads, groups, d).requires_grad_(true)}};
    SplitRegistry only_qkv;
    only_qkv.add("attn.qkv.weight", qkv_split_interleaved(heads, groups, d, gran));
    MuonWithAdamW e(one, groups_cfg, default_routing_rules(), only_qkv);
    at::manual_seed(100);
    one[0].tensor.mutable_grad() = at::randn(one[0].tensor.sizes());
    e.step();
    EXPECT_FALSE(at::equal(unsplit[0].tensor, one[0].tensor));
  }
}

}  // namespace
}  // namespace orthotron
