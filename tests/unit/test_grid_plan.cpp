// test_grid_plan.cpp: the tensor-parallel cut of a parameter (pieces, assembly, local splits) and
// the grid plan as a pure function: which Muon parameters stay local to a TP piece and which go to
// one TP owner, the refusal of a replicated Muon parameter, the TP = 1 plan unchanged; and the
// 7B-shaped GPT at TP = 8 with DP 8, 64 and 1024: padding, NS imbalance over the grid, and bytes per
// rank per step against Megatron's distributed optimizer running AdamW on the same grid (computed).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "base/errors.h"
#include "gpt_fixture.h"
#include "optim/grid_plan.h"

namespace orthotron {
namespace {

using orthotron::testing::GptShape;

// The GPT's Megatron layout over the fixture's names (tp_layout() of GptModel, for shapes alone).
TensorParallelLayout gpt_layout(const GptShape& s, int tp) {
  TensorParallelLayout layout;
  layout.size = tp;
  const TpShard rows{TpCut::kRows, 1}, gate_up{TpCut::kRows, 2}, columns{TpCut::kColumns, 1};
  layout.shards["embedding.word_embeddings.weight"] = rows;
  layout.shards["output_layer.weight"] = rows;
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "decoder.layers." + std::to_string(l) + ".";
    layout.shards[p + "self_attention.linear_qkv.weight"] = rows;
    layout.shards[p + "self_attention.linear_qkv.bias"] = rows;
    layout.shards[p + "self_attention.linear_proj.weight"] = columns;
    layout.shards[p + "mlp.linear_fc1.weight"] = gate_up;
    layout.shards[p + "mlp.linear_fc2.weight"] = columns;
  }
  return layout;
}

TEST(TpLayout, PiecesAssembleToTheLogicalTensor) {
  const at::Tensor logical = at::arange(24 * 6, at::kFloat).view({24, 6});
  for (const TpShard shard : {TpShard{TpCut::kRows, 1}, TpShard{TpCut::kRows, 2}, TpShard{TpCut::kColumns, 1}}) {
    for (int T : {1, 2, 3}) {
      std::vector<at::Tensor> pieces;
      for (int t = 0; t < T; ++t) pieces.push_back(tp_piece(logical, shard, t, T));
      EXPECT_TRUE(at::equal(tp_assemble(pieces, shard), logical)) << to_string(shard.cut) << " x" << T;
      EXPECT_EQ(tp_logical_shape("w", pieces[0].sizes().vec(), shard, T), logical.sizes().vec());
    }
  }
  // [gate; up] over 2 ranks: rank 1 holds gate rows 6..11 and up rows 18..23.
  const at::Tensor rows = tp_piece_rows(24, TpShard{TpCut::kRows, 2}, 1, 2);
  EXPECT_TRUE(at::equal(rows, at::cat({at::arange(6, 12, at::kLong), at::arange(18, 24, at::kLong)})));
  EXPECT_TRUE(at::equal(tp_piece(logical, TpShard{TpCut::kRows, 2}, 1, 2), logical.index_select(0, rows)));
  EXPECT_THROW(check_tp_divisible("w", {24, 6}, TpShard{TpCut::kColumns, 1}, 4), InvalidArgument);
}

TEST(TpLayout, PerHeadPartsAreLocalAndQkvPartsAreNot) {
  const TpShard rows{TpCut::kRows, 1};
  const ParamSplit per_head = qkv_split_interleaved(8, 4, 4, SplitGranularity::kPerHead);
  const ParamSplit qkv = qkv_split_interleaved(8, 4, 4, SplitGranularity::kQkv);
  const ParamSplit gate_up = gate_up_split(12);
  EXPECT_TRUE(tp_split_is_local(&per_head, rows, 2));
  EXPECT_TRUE(tp_split_is_local(&per_head, rows, 4));
  EXPECT_FALSE(tp_split_is_local(&qkv, rows, 2));
  EXPECT_FALSE(tp_split_is_local(&gate_up, TpShard{TpCut::kRows, 2}, 2));
  EXPECT_FALSE(tp_split_is_local(nullptr, rows, 2));
  // Rank 1 of 2 holds groups 2 and 3: query heads 4..7, key and value heads 2 and 3, renumbered.
  const ParamSplit local = tp_local_split(per_head, rows, 1, 2);
  ASSERT_EQ(local.parts.size(), 8u);
  EXPECT_EQ(local.rows, 32);
  EXPECT_EQ(local.parts[0].name, "q.head4");
  EXPECT_EQ(local.parts[0].rows[0].item<int64_t>(), 0);
  const at::Tensor piece_rows = tp_piece_rows(64, rows, 1, 2);
  for (const auto& part : local.parts) {
    const auto it = std::find_if(per_head.parts.begin(), per_head.parts.end(),
                                 [&](const SplitPart& p) { return p.name == part.name; });
    ASSERT_NE(it, per_head.parts.end());
    EXPECT_TRUE(at::equal(piece_rows.index_select(0, part.rows), it->rows)) << part.name;
  }
}

TEST(GridPlan, GathersWhatIsNotLocalAndBalancesTheOwners) {
  GptShape s;
  s.heads = 8;
  s.kv_heads = 4;
  for (SplitGranularity g : {SplitGranularity::kQkv, SplitGranularity::kPerHead}) {
    const SplitRegistry splits = orthotron::testing::gpt_splits(s, g);
    const auto params = orthotron::testing::gpt_plan_params(s, splits);
    const GridPlan plan = make_grid_plan(params, splits, gpt_layout(s, 2), 2, 0);
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].algorithm != Algorithm::kMuon) {
        EXPECT_FALSE(plan.gathered[i]) << params[i].name;
        continue;
      }
      const bool local = g == SplitGranularity::kPerHead && params[i].name.find("linear_qkv") != std::string::npos;
      EXPECT_EQ(plan.gathered[i] == 0, local) << params[i].name;
      EXPECT_EQ(plan.tp_owner[i] >= 0, !local) << params[i].name;
    }
    // The same plan from the other TP rank (its local splits aside): same hash.
    EXPECT_EQ(make_grid_plan(params, splits, gpt_layout(s, 2), 2, 1).hash, plan.hash);
    EXPECT_LT(plan.ns_imbalance(), 1.6) << plan.summary();
  }
  const SplitRegistry splits = orthotron::testing::gpt_splits(s);
  const auto params = orthotron::testing::gpt_plan_params(s, splits);
  EXPECT_EQ(make_grid_plan(params, splits, TensorParallelLayout{}, 3, 0).hash, make_owner_plan(params, 3).hash)
      << "TP = 1 keeps layout A's hash (checkpoints saved before TP existed still load)";
  EXPECT_NE(make_grid_plan(params, splits, gpt_layout(s, 2), 3, 0).hash,
            make_grid_plan(params, splits, gpt_layout(s, 1), 3, 0).hash);
  // A Muon matrix replicated across TP ranks would be orthogonalized T times: refused.
  TensorParallelLayout missing = gpt_layout(s, 2);
  missing.shards.erase("decoder.layers.0.mlp.linear_fc2.weight");
  try {
    make_grid_plan(params, splits, missing, 2, 0);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'decoder.layers.0.mlp.linear_fc2.weight' is routed to Muon but replicated"),
              std::string::npos)
        << e.what();
  }
}

// The 7B-shaped GPT (32 layers, hidden 4096, GQA 32/8, SwiGLU 11008, vocab 32000) at TP = 8.
// Bytes per rank per step, both directions, float32 gradients and parameters:
//   ours:     DP reduce-scatter + all-gather of D x S elements, plus the TP exchange of gathered
//             Muon parameters (tp_exchange_elements; the rank that moves the most);
//   Megatron: its distributed optimizer with AdamW shards each TP rank's parameters evenly over
//             DP: reduce-scatter + all-gather of ceil(P_tp / D) x D elements.
// The TP all-reduces of activations are the same for both (the model's layers), so left out.
TEST(GridPlan, SevenBillionGptAtTensorParallel8) {
  const GptShape s = orthotron::testing::seven_billion_gpt_shape();
  const int T = 8;
  std::printf("7B GPT at TP=%d (qkv split as q, k, v; per_head in brackets where it differs):\n", T);
  std::printf("%6s %10s %12s %12s %14s %14s %10s %6s %12s\n", "DP", "padding", "NS max/mean", "exchange/RS+AG",
              "bytes vs Megatron", "[per_head]", "plan ms", "auto", "auto bytes");
  for (int D : {8, 64, 1024}) {
    double ratio[2] = {0, 0};
    GridPlan plans[2];
    double build_ms = 0;
    for (int k = 0; k < 2; ++k) {
      const SplitRegistry splits =
          orthotron::testing::gpt_splits(s, k == 0 ? SplitGranularity::kQkv : SplitGranularity::kPerHead);
      const auto params = orthotron::testing::gpt_plan_params(s, splits);
      const auto start = std::chrono::steady_clock::now();
      plans[k] = make_grid_plan(params, splits, gpt_layout(s, T), D, 0);
      if (k == 0)
        build_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      const GridPlan& plan = plans[k];
      int64_t worst_exchange = 0;
      for (int d = 0; d < D; ++d) {
        for (int t = 0; t < T; ++t) {
          const auto [sent, received] = plan.tp_exchange_elements(t, d);
          worst_exchange = std::max(worst_exchange, sent + received);
        }
      }
      const double dp_traffic = 2.0 * 2.0 * (D - 1) * static_cast<double>(plan.dp.shard_len);
      const double megatron = 2.0 * 2.0 * (D - 1) * std::ceil(static_cast<double>(plan.dp.total_elements) / D);
      ratio[k] = (dp_traffic + static_cast<double>(worst_exchange)) / megatron;
      if (k == 0) {
        std::printf("%6d %9.2f%% %12.3f %12.3f", D, 100 * plan.dp.padding_ratio(), plan.ns_imbalance(),
                    static_cast<double>(worst_exchange) / dp_traffic);
      }
    }
    // `auto` over the pieces (qkv split): layout B's all-to-alls are added where it picks B.
    const SplitRegistry qkv = orthotron::testing::gpt_splits(s, SplitGranularity::kQkv);
    const GridPlan chosen =
        make_grid_plan(orthotron::testing::gpt_plan_params(s, qkv), qkv, gpt_layout(s, T), D, 0, "auto");
    int64_t worst = 0;
    for (int d = 0; d < D; ++d) {
      for (int t = 0; t < T; ++t) {
        const auto [sent, received] = chosen.tp_exchange_elements(t, d);
        const auto ud = static_cast<size_t>(d);
        worst = std::max(worst, sent + received + 2 * (chosen.dp.gather_sent[ud] + chosen.dp.gather_received[ud]));
      }
    }
    const double auto_ratio =
        (2.0 * 2.0 * (D - 1) * static_cast<double>(chosen.dp.shard_len) + static_cast<double>(worst)) /
        (2.0 * 2.0 * (D - 1) * std::ceil(static_cast<double>(chosen.dp.total_elements) / D));
    const bool b = chosen.dp.layout == ShardLayout::kElementWise;
    std::printf(" %14.3f %14.3f %10.1f %6s %12.3f\n", ratio[0], ratio[1], build_ms, b ? "B" : "A", auto_ratio);
    EXPECT_LE(auto_ratio, ratio[0] + 1e-9) << "auto never moves more than layout A";
    if (D == 1024) {
      EXPECT_TRUE(b) << chosen.layout_reason;
      EXPECT_LT(auto_ratio, 2.0) << "layout B removes layout A's padding at DP 1024";
    }
    // DP 8: padding under 1% and the exchange adds well under the DP traffic.
    if (D == 8) {
      EXPECT_LT(plans[0].dp.padding_ratio(), 0.01);
      EXPECT_LT(ratio[0], 2.0);
      EXPECT_LE(ratio[1], ratio[0]) << "per-head QKV stays local: no more bytes than q/k/v";
    }
    EXPECT_LT(build_ms, 1000.0) << "building the plan must stay well under a second";
  }
}

}  // namespace
}  // namespace orthotron
