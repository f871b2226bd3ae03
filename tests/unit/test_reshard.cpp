// test_reshard.cpp: resharding a checkpoint's shards (engine/checkpoint/reshard.h) without files
// or ranks: old shards are built from a known global (logical) state on an old TP x DP grid, every
// new rank's shard on another grid (DP, TP or both changed) is assembled from the old shards
// reshard_sources names (and only those), and the union of the new shards must equal the global
// state bitwise, every piece and element exactly once, with steps, shapes and ranges of the new
// plan; a plan of another model is named by its parameter.
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "base/errors.h"
#include "engine/checkpoint/reshard.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::contains;
using orthotron::testing::thrown_message;
using Json = nlohmann::json;

PlanParam param(const std::string& name, std::vector<int64_t> shape, Algorithm a) {
  PlanParam p;
  p.name = name;
  p.shape = std::move(shape);
  p.algorithm = a;
  p.group = a == Algorithm::kMuon ? 0 : 1;
  p.ns_cost = a == Algorithm::kMuon ? static_cast<double>(p.numel()) : 0.0;
  return p;
}

// Every kind of parameter a TP x DP grid holds: vocabulary-parallel rows (AdamW), fused [gate; up]
// rows in 2 blocks (Muon, gathered), row-parallel columns (Muon, gathered), a replicated norm
// (AdamW), a matrix split in two row parts (Muon: local at TP 2, gathered at TP 4), a cut bias.
// Every cut divides by 1, 2 and 4.
std::vector<PlanParam> model_params() {
  return {param("embed", {8, 3}, Algorithm::kAdamW), param("fc1", {8, 4}, Algorithm::kMuon),
          param("proj", {6, 4}, Algorithm::kMuon),   param("norm", {11}, Algorithm::kAdamW),
          param("qkv", {4, 8}, Algorithm::kMuon),    param("bias", {8}, Algorithm::kAdamW)};
}

SplitRegistry model_splits() {
  SplitRegistry r;
  ParamSplit heads;
  heads.rows = 4;
  heads.parts = {{"h0", at::arange(0, 2, at::kLong)}, {"h1", at::arange(2, 4, at::kLong)}};
  r.add("qkv", heads);
  return r;
}

TensorParallelLayout model_layout(int tp) {
  TensorParallelLayout l;
  l.size = tp;
  l.shards = {{"embed", {TpCut::kRows, 1}},
              {"fc1", {TpCut::kRows, 2}},
              {"proj", {TpCut::kColumns, 1}},
              {"qkv", {TpCut::kRows, 1}},
              {"bias", {TpCut::kRows, 1}}};
  return l;
}

/// The plan of TP rank `t` on a tp x dp grid.
GridPlan grid_plan(const std::vector<PlanParam>& params, int tp, int dp, int t) {
  return make_grid_plan(params, model_splits(), model_layout(tp), dp, t);
}

std::string hex16(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

/// The global truth, logical shapes: value, and Muon momentum or AdamW (exp_avg, exp_avg_sq); steps differ per
/// parameter.
struct Truth {
  std::map<std::string, at::Tensor> value, momentum, exp_avg, exp_avg_sq;
  std::map<std::string, int64_t> step;
};

Truth make_truth(const std::vector<PlanParam>& params) {
  at::manual_seed(7);
  Truth t;
  int64_t k = 3;
  for (const auto& p : params) {
    t.value[p.name] = at::randn(p.shape);
    t.step[p.name] = k++;
    if (p.algorithm == Algorithm::kMuon) {
      t.momentum[p.name] = at::randn(p.shape);
    } else {
      t.exp_avg[p.name] = at::randn(p.shape);
      t.exp_avg_sq[p.name] = at::rand(p.shape);
    }
  }
  return t;
}

/// Rank t's piece of a logical tensor of parameter i, flat elements [b, e).
at::Tensor flat_piece(const at::Tensor& logical, const GridPlan& plan, size_t i, int64_t b, int64_t e) {
  return tp_piece(logical, plan.shard[i], plan.tp_rank, plan.tp).reshape(-1).narrow(0, b, e - b).clone();
}

/// The shards a tp x dp run holding `truth` writes, by grid rank (tensors and "orthotron.state" as
/// the optimizer does: a gathered Muon parameter's logical momentum on its TP owner only).
std::map<int, SafetensorsContent> old_shards(const std::vector<PlanParam>& params, int tp, int dp, const Truth& truth) {
  std::map<int, SafetensorsContent> out;
  for (int t = 0; t < tp; ++t) {
    const GridPlan plan = grid_plan(params, tp, dp, t);
    for (int d = 0; d < dp; ++d) {
      SafetensorsContent& c = out[t + d * tp];
      Json state = {{"muon", {{"groups", {{"g0", {{"algorithm", "muon"}}}}}, {"params", Json::object()}}},
                    {"adamw", {{"groups", {{"g1", {{"algorithm", "adamw"}}}}}, {"params", Json::object()}}}};
      for (const auto& s : plan.dp.shard_segments(d)) {
        const size_t i = s.param;
        const std::string& name = plan.logical[i].name;
        const std::vector<int64_t>& piece_shape = plan.dp.params[i].shape;
        Json e = {{"step", truth.step.at(name)}, {"shape", piece_shape}, {"dtype", "F32"}};
        if (plan.dp.owner[i] >= 0) {
          e["group"] = "g0";
          c.tensors["model/" + name] = tp_piece(truth.value.at(name), plan.shard[i], t, tp);
          if (plan.gathered[i] && plan.tp_owner[i] != t) continue;  // the TP owner keeps the state
          if (plan.gathered[i]) e["shape"] = plan.logical[i].shape;
          c.tensors["muon/" + name + "/momentum"] = plan.gathered[i]
                                                        ? truth.momentum.at(name).clone()
                                                        : tp_piece(truth.momentum.at(name), plan.shard[i], t, tp);
          state["muon"]["params"][name] = e;
        } else {
          const int64_t b = s.param_begin, end = s.param_begin + s.count;
          e["group"] = "g1";
          e["range"] = {b, end};
          c.tensors["model/" + name] = flat_piece(truth.value.at(name), plan, i, b, end);
          c.tensors["adamw/" + name + "/exp_avg"] = flat_piece(truth.exp_avg.at(name), plan, i, b, end);
          c.tensors["adamw/" + name + "/exp_avg_sq"] = flat_piece(truth.exp_avg_sq.at(name), plan, i, b, end);
          state["adamw"]["params"][name] = e;
        }
      }
      c.metadata["orthotron.state"] = state.dump();
      c.metadata["orthotron.format"] = "optimizer_state";
    }
  }
  return out;
}

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes().equals(b.sizes()) && at::equal(a, b);
}

struct Grids {
  int tp_old, dp_old, tp_new, dp_new;
};

void PrintTo(const Grids& g, std::ostream* os) {
  *os << "TP " << g.tp_old << " x DP " << g.dp_old << " -> TP " << g.tp_new << " x DP " << g.dp_new;
}

std::string grid_name(const ::testing::TestParamInfo<Grids>& info) {
  const Grids& g = info.param;
  return "TP" + std::to_string(g.tp_old) + "xDP" + std::to_string(g.dp_old) + "_to_TP" + std::to_string(g.tp_new) +
         "xDP" + std::to_string(g.dp_new);
}

class Reshard : public ::testing::TestWithParam<Grids> {};

// Every new rank's shard is assembled from only the old shards reshard_sources names; the new
// shards hold the saved state bitwise, each piece of each parameter on exactly one DP rank, each
// momentum on its holders (a gathered parameter's TP owner, or every TP rank's piece when local),
// every AdamW element of every piece exactly once, with the steps, shapes and ranges of the new plan.
TEST_P(Reshard, UnionOfNewShardsEqualsTheSavedStateExactlyOnce) {
  const Grids g = GetParam();
  const auto params = model_params();
  const Truth truth = make_truth(params);
  const GridPlan old0 = grid_plan(params, g.tp_old, g.dp_old, 0);
  const SavedLayout saved = layout_of(old0);
  const auto shards = old_shards(params, g.tp_old, g.dp_old, truth);

  std::map<std::string, int64_t> muon_pieces, momentum_holders;
  std::map<std::string, std::vector<int64_t>> adamw_cover;  // per (parameter, TP rank) element: new holders
  for (int t = 0; t < g.tp_new; ++t) {
    const GridPlan plan = grid_plan(params, g.tp_new, g.dp_new, t);
    EXPECT_EQ(describe_plan_mismatch(saved, hex16(old0.hash), plan, model_splits(), {}), "");
    const GridPlan old_plan = saved_grid_plan(saved, plan, model_splits());
    EXPECT_EQ(old_plan.hash, old0.hash);
    for (int d = 0; d < g.dp_new; ++d) {
      std::map<int, SafetensorsContent> needed;  // only what reshard_sources names
      for (int o : reshard_sources(saved, old_plan, plan, d)) needed[o] = shards.at(o);
      const ReshardedShard got = assemble_reshard(saved, old_plan, needed, plan, d);
      const Json state = Json::parse(got.state.metadata.at("orthotron.state"));
      const Json layout = Json::parse(got.state.metadata.at("orthotron.layout"));
      EXPECT_EQ(layout["world_size"], g.dp_new);
      EXPECT_EQ(layout["rank"], d);
      EXPECT_EQ(layout.value("tp_rank", 0), t);
      EXPECT_EQ(layout.value("tensor_parallel", 1), g.tp_new);
      EXPECT_EQ(got.state.metadata.at("orthotron.format"), "optimizer_state");
      EXPECT_TRUE(state["muon"]["groups"].contains("g0"));
      EXPECT_EQ(got.model.size(), plan.dp.shard_segments(d).size());
      for (const auto& s : plan.dp.shard_segments(d)) {
        const size_t i = s.param;
        const std::string& name = plan.logical[i].name;
        const std::string where = name + " on new rank (" + std::to_string(t) + ", " + std::to_string(d) + ")";
        if (plan.dp.owner[i] >= 0) {
          ++muon_pieces[name];
          EXPECT_TRUE(same_bits(got.model.at(name), tp_piece(truth.value.at(name), plan.shard[i], t, plan.tp)))
              << where;
          const std::string key = "muon/" + name + "/momentum";
          if (plan.gathered[i] && plan.tp_owner[i] != t) {
            EXPECT_FALSE(got.state.tensors.count(key)) << where;
            EXPECT_FALSE(state["muon"]["params"].contains(name)) << where;
            continue;
          }
          ++momentum_holders[name];
          const at::Tensor want =
              plan.gathered[i] ? truth.momentum.at(name) : tp_piece(truth.momentum.at(name), plan.shard[i], t, plan.tp);
          EXPECT_TRUE(same_bits(got.state.tensors.at(key), want)) << where;
          EXPECT_EQ(state["muon"]["params"][name]["step"], truth.step.at(name)) << where;
          EXPECT_EQ(state["muon"]["params"][name]["shape"], Json(want.sizes().vec())) << where;
          EXPECT_FALSE(state["muon"]["params"][name].contains("range")) << where;
          continue;
        }
        const int64_t b = s.param_begin, e = s.param_begin + s.count;
        EXPECT_TRUE(same_bits(got.model.at(name), flat_piece(truth.value.at(name), plan, i, b, e))) << where;
        EXPECT_TRUE(same_bits(got.state.tensors.at("adamw/" + name + "/exp_avg"),
                              flat_piece(truth.exp_avg.at(name), plan, i, b, e)))
            << where;
        EXPECT_TRUE(same_bits(got.state.tensors.at("adamw/" + name + "/exp_avg_sq"),
                              flat_piece(truth.exp_avg_sq.at(name), plan, i, b, e)))
            << where;
        const Json& entry = state["adamw"]["params"][name];
        EXPECT_EQ(entry["step"], truth.step.at(name)) << where;
        EXPECT_EQ(entry["range"], Json({b, e})) << where;
        EXPECT_EQ(entry["shape"], Json(plan.dp.params[i].shape)) << where;
        auto& cover = adamw_cover[name + "@" + std::to_string(t)];
        cover.resize(static_cast<size_t>(plan.dp.params[i].numel()), 0);
        for (int64_t k = b; k < e; ++k) ++cover[static_cast<size_t>(k)];
      }
    }
  }
  const GridPlan new0 = grid_plan(params, g.tp_new, g.dp_new, 0);
  for (size_t i = 0; i < params.size(); ++i) {
    const PlanParam& p = params[i];
    if (p.algorithm == Algorithm::kMuon) {
      EXPECT_EQ(muon_pieces[p.name], g.tp_new) << p.name << ": one DP owner per TP piece";
      EXPECT_EQ(momentum_holders[p.name], new0.gathered[i] ? 1 : g.tp_new) << p.name;
    } else {
      for (int t = 0; t < g.tp_new; ++t) {
        const auto& cover = adamw_cover[p.name + "@" + std::to_string(t)];
        EXPECT_EQ(static_cast<int64_t>(cover.size()), new0.dp.params[i].numel()) << p.name;
        for (int64_t c : cover) EXPECT_EQ(c, 1) << p.name << " TP rank " << t;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Grids, Reshard,
                         ::testing::Values(Grids{1, 4, 1, 2}, Grids{1, 4, 1, 3}, Grids{1, 2, 1, 4}, Grids{1, 1, 1, 3},
                                           Grids{1, 3, 1, 1}, Grids{1, 3, 1, 5}, Grids{2, 2, 1, 4}, Grids{2, 2, 1, 1},
                                           Grids{1, 4, 2, 2}, Grids{1, 1, 2, 2}, Grids{2, 2, 4, 1}, Grids{4, 1, 2, 2},
                                           Grids{2, 2, 2, 3}, Grids{4, 2, 1, 3}),
                         grid_name);

TEST(Reshard, SourcesAreOnlyTheOldShardsHoldingWhatARankNeeds) {
  const auto params = model_params();
  const auto truth = make_truth(params);
  for (const Grids g : {Grids{1, 4, 1, 2}, Grids{2, 2, 1, 4}, Grids{2, 2, 2, 1}}) {
    const GridPlan old0 = grid_plan(params, g.tp_old, g.dp_old, 0);
    const SavedLayout saved = layout_of(old0);
    const auto shards = old_shards(params, g.tp_old, g.dp_old, truth);
    for (int t = 0; t < g.tp_new; ++t) {
      const GridPlan plan = grid_plan(params, g.tp_new, g.dp_new, t);
      const GridPlan old_plan = saved_grid_plan(saved, plan, model_splits());
      for (int d = 0; d < g.dp_new; ++d) {
        const auto sources = reshard_sources(saved, old_plan, plan, d);
        if (g.tp_old == g.tp_new) {
          // Same pieces: only old shards of this TP rank.
          for (int o : sources) EXPECT_EQ(o % g.tp_old, t) << "old rank " << o;
        }
        // Dropping any one named source makes the assembly fail naming it.
        for (int drop : sources) {
          std::map<int, SafetensorsContent> partial;
          for (int o : sources) {
            if (o != drop) partial[o] = shards.at(o);
          }
          EXPECT_TRUE(
              contains(thrown_message<FormatError>([&] { assemble_reshard(saved, old_plan, partial, plan, d); }),
                       "old rank " + std::to_string(drop)))
              << grid_name({g, 0}) << " new rank (" << t << ", " << d << ") without old rank " << drop;
        }
      }
    }
  }
}

TEST(Reshard, AnotherModelIsNamedByItsParameter) {
  const auto params = model_params();
  const GridPlan old_plan = grid_plan(params, 2, 2, 0);
  const SavedLayout saved = layout_of(old_plan);
  const std::string hash = hex16(old_plan.hash);
  auto shape_of = [&](const std::string& name, int) {  // the piece in an old shard
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].name == name) return old_plan.dp.params[i].shape;
    }
    return std::vector<int64_t>{};
  };
  auto plan_of = [](const std::vector<PlanParam>& ps) { return grid_plan(ps, 1, 3, 0); };
  auto changed = [&](const std::string& name, std::vector<int64_t> shape) {
    auto ps = model_params();
    for (auto& p : ps) {
      if (p.name == name) p = param(name, shape, p.algorithm);
    }
    return describe_plan_mismatch(saved, hash, plan_of(ps), model_splits(), shape_of);
  };
  EXPECT_TRUE(
      contains(changed("proj", {6, 6}), "parameter 'proj' has shape [6, 4] in the checkpoint, this model's is [6, 6]"));
  EXPECT_TRUE(contains(changed("norm", {12}), "parameter 'norm' has 11 elements in the checkpoint"));
  auto extra = model_params();
  extra.push_back(param("new", {4, 4}, Algorithm::kMuon));
  EXPECT_TRUE(contains(describe_plan_mismatch(saved, hash, plan_of(extra), model_splits(), shape_of),
                       "parameter 'new' is not in the checkpoint"));
  auto fewer = model_params();
  fewer.pop_back();
  EXPECT_TRUE(contains(describe_plan_mismatch(saved, hash, plan_of(fewer), model_splits(), shape_of),
                       "parameter 'bias' is in the checkpoint but not in this model"));
  auto moved = model_params();
  moved[3] = param("norm", {11}, Algorithm::kMuon);
  EXPECT_TRUE(contains(describe_plan_mismatch(saved, hash, plan_of(moved), model_splits(), shape_of),
                       "parameter 'norm' was adamw in the checkpoint but is routed to muon here"));
  auto regrouped = model_params();
  regrouped[0].group = 2;
  EXPECT_TRUE(contains(describe_plan_mismatch(saved, hash, plan_of(regrouped), model_splits(), shape_of),
                       "groups, routing or splits differ"));
}

TEST(Reshard, MalformedLayoutRecordIsAFormatError) {
  const Json good = {{"world_size", 2},
                     {"plan_hash", "ab"},
                     {"shard_len", 10},
                     {"owners", {{"a", 1}}},
                     {"adamw_ranges", {{"n", {{0, 0, 4}, {1, 4, 9}}}}}};
  const SavedLayout s = parse_saved_layout(good, "m.json");
  EXPECT_EQ(s.owners.at("a"), 1);
  EXPECT_EQ(s.adamw_ranges.at("n").size(), 2u);
  Json bad = good;
  bad["owners"]["a"] = 2;
  EXPECT_TRUE(contains(thrown_message<FormatError>([&] { parse_saved_layout(bad, "m.json"); }), "owner of 'a'"));
  bad = good;
  bad["adamw_ranges"]["n"][1] = {1, 4, 3};
  EXPECT_TRUE(contains(thrown_message<FormatError>([&] { parse_saved_layout(bad, "m.json"); }), "out of bounds"));
  bad = good;
  bad.erase("shard_len");
  EXPECT_TRUE(contains(thrown_message<FormatError>([&] { parse_saved_layout(bad, "m.json"); }), "'shard_len'"));
}

}  // namespace
}  // namespace orthotron
