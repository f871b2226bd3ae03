// test_reshard.cpp: resharding a checkpoint's shards (engine/checkpoint/reshard.h) without files
// or ranks: old shards are built from a known global state at W_old, every new rank's shard is
// assembled from the old shards reshard_sources names (and only those), and the union of the new
// shards must equal the global state bitwise, every element exactly once, with steps and ranges
// of the new plan; a plan of another model is named by its parameter.
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

std::vector<PlanParam> model_params() {
  return {param("embed", {7, 3}, Algorithm::kAdamW), param("a", {6, 4}, Algorithm::kMuon),
          param("b", {5, 5}, Algorithm::kMuon),      param("norm", {11}, Algorithm::kAdamW),
          param("c", {3, 8}, Algorithm::kMuon),      param("bias", {2, 3}, Algorithm::kAdamW)};
}

std::string hex16(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

/// The global truth: value, and Muon momentum or AdamW (exp_avg, exp_avg_sq), flat; steps differ per parameter.
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
      t.exp_avg[p.name] = at::randn({p.numel()});
      t.exp_avg_sq[p.name] = at::rand({p.numel()});
    }
  }
  return t;
}

/// The shards a W-rank run holding `truth` writes (tensors and "orthotron.state" as the optimizer does).
std::map<int, SafetensorsContent> old_shards(const OwnerPlan& plan, const Truth& truth) {
  std::map<int, SafetensorsContent> out;
  for (int r = 0; r < plan.world; ++r) {
    SafetensorsContent& c = out[r];
    Json state = {{"muon", {{"groups", {{"g0", {{"algorithm", "muon"}}}}}, {"params", Json::object()}}},
                  {"adamw", {{"groups", {{"g1", {{"algorithm", "adamw"}}}}}, {"params", Json::object()}}}};
    for (const auto& s : plan.shard_segments(r)) {
      const PlanParam& p = plan.params[s.param];
      Json e = {{"step", truth.step.at(p.name)}, {"shape", p.shape}, {"dtype", "F32"}};
      if (plan.owner[s.param] >= 0) {
        e["group"] = "g0";
        c.tensors["model/" + p.name] = truth.value.at(p.name).clone();
        c.tensors["muon/" + p.name + "/momentum"] = truth.momentum.at(p.name).clone();
        state["muon"]["params"][p.name] = e;
      } else {
        e["group"] = "g1";
        e["range"] = {s.param_begin, s.param_begin + s.count};
        c.tensors["model/" + p.name] = truth.value.at(p.name).reshape(-1).narrow(0, s.param_begin, s.count).clone();
        c.tensors["adamw/" + p.name + "/exp_avg"] = truth.exp_avg.at(p.name).narrow(0, s.param_begin, s.count).clone();
        c.tensors["adamw/" + p.name + "/exp_avg_sq"] =
            truth.exp_avg_sq.at(p.name).narrow(0, s.param_begin, s.count).clone();
        state["adamw"]["params"][p.name] = e;
      }
    }
    c.metadata["orthotron.state"] = state.dump();
    c.metadata["orthotron.format"] = "optimizer_state";
  }
  return out;
}

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.sizes().equals(b.sizes()) && at::equal(a, b);
}

class Reshard : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(Reshard, UnionOfNewShardsEqualsTheSavedStateExactlyOnce) {
  const auto [w_old, w_new] = GetParam();
  const auto params = model_params();
  const Truth truth = make_truth(params);
  const OwnerPlan old_plan = make_owner_plan(params, w_old);
  const OwnerPlan new_plan = make_owner_plan(params, w_new);
  const SavedLayout saved = layout_of(old_plan);
  EXPECT_EQ(describe_plan_mismatch(saved, hex16(old_plan.hash), new_plan, {}), "");
  const auto shards = old_shards(old_plan, truth);

  std::map<std::string, int64_t> muon_seen;
  std::map<std::string, std::vector<int64_t>> adamw_cover;  // per element: how many new ranks hold it
  for (const auto& p : params) {
    if (p.algorithm == Algorithm::kAdamW) adamw_cover[p.name].assign(static_cast<size_t>(p.numel()), 0);
  }
  for (int r = 0; r < w_new; ++r) {
    std::map<int, SafetensorsContent> needed;  // only what reshard_sources names
    for (int o : reshard_sources(saved, new_plan, r)) needed[o] = shards.at(o);
    const ReshardedShard got = assemble_reshard(saved, needed, new_plan, r);
    const Json state = Json::parse(got.state.metadata.at("orthotron.state"));
    const Json layout = Json::parse(got.state.metadata.at("orthotron.layout"));
    EXPECT_EQ(layout["world_size"], w_new);
    EXPECT_EQ(layout["rank"], r);
    EXPECT_EQ(got.state.metadata.at("orthotron.format"), "optimizer_state");
    EXPECT_TRUE(state["muon"]["groups"].contains("g0"));
    EXPECT_EQ(got.model.size(), new_plan.shard_segments(r).size());
    for (const auto& s : new_plan.shard_segments(r)) {
      const std::string& name = new_plan.params[s.param].name;
      if (new_plan.owner[s.param] >= 0) {
        ++muon_seen[name];
        EXPECT_TRUE(same_bits(got.model.at(name), truth.value.at(name))) << name;
        EXPECT_TRUE(same_bits(got.state.tensors.at("muon/" + name + "/momentum"), truth.momentum.at(name))) << name;
        EXPECT_EQ(state["muon"]["params"][name]["step"], truth.step.at(name));
        EXPECT_FALSE(state["muon"]["params"][name].contains("range"));
        continue;
      }
      EXPECT_TRUE(same_bits(got.model.at(name), truth.value.at(name).reshape(-1).narrow(0, s.param_begin, s.count)));
      EXPECT_TRUE(same_bits(got.state.tensors.at("adamw/" + name + "/exp_avg"),
                            truth.exp_avg.at(name).narrow(0, s.param_begin, s.count)));
      EXPECT_TRUE(same_bits(got.state.tensors.at("adamw/" + name + "/exp_avg_sq"),
                            truth.exp_avg_sq.at(name).narrow(0, s.param_begin, s.count)));
      const Json& e = state["adamw"]["params"][name];
      EXPECT_EQ(e["step"], truth.step.at(name));
      EXPECT_EQ(e["range"], Json({s.param_begin, s.param_begin + s.count}));
      for (int64_t k = s.param_begin; k < s.param_begin + s.count; ++k) ++adamw_cover[name][static_cast<size_t>(k)];
    }
  }
  for (const auto& p : params) {
    if (p.algorithm == Algorithm::kMuon) {
      EXPECT_EQ(muon_seen[p.name], 1) << p.name;
    } else {
      for (int64_t c : adamw_cover[p.name]) EXPECT_EQ(c, 1) << p.name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, Reshard,
                         ::testing::Values(std::make_pair(4, 2), std::make_pair(4, 3), std::make_pair(2, 4),
                                           std::make_pair(1, 3), std::make_pair(3, 1), std::make_pair(3, 5)));

TEST(Reshard, SourcesAreOnlyTheOldShardsHoldingWhatARankNeeds) {
  const auto params = model_params();
  const OwnerPlan old_plan = make_owner_plan(params, 4);
  const SavedLayout saved = layout_of(old_plan);
  const OwnerPlan new_plan = make_owner_plan(params, 2);
  for (int r = 0; r < 2; ++r) {
    const auto sources = reshard_sources(saved, new_plan, r);
    // Dropping any one named source makes the assembly fail naming it.
    const auto shards = old_shards(old_plan, make_truth(params));
    for (int drop : sources) {
      std::map<int, SafetensorsContent> partial;
      for (int o : sources) {
        if (o != drop) partial[o] = shards.at(o);
      }
      EXPECT_TRUE(contains(thrown_message<FormatError>([&] { assemble_reshard(saved, partial, new_plan, r); }),
                           "old rank " + std::to_string(drop)));
    }
  }
}

TEST(Reshard, AnotherModelIsNamedByItsParameter) {
  const auto params = model_params();
  const OwnerPlan old_plan = make_owner_plan(params, 4);
  const SavedLayout saved = layout_of(old_plan);
  const std::string hash = hex16(old_plan.hash);
  auto shape_of = [&](const std::string& name, int) {
    for (const auto& p : params) {
      if (p.name == name) return p.shape;
    }
    return std::vector<int64_t>{};
  };
  auto changed = [&](const std::string& name, std::vector<int64_t> shape) {
    auto ps = model_params();
    for (auto& p : ps) {
      if (p.name == name) p = param(name, shape, p.algorithm);
    }
    return describe_plan_mismatch(saved, hash, make_owner_plan(ps, 2), shape_of);
  };
  EXPECT_TRUE(
      contains(changed("b", {5, 6}), "parameter 'b' has shape [5, 5] in the checkpoint, this model's is [5, 6]"));
  EXPECT_TRUE(contains(changed("norm", {12}), "parameter 'norm' has 11 elements in the checkpoint"));
  auto extra = model_params();
  extra.push_back(param("new", {4, 4}, Algorithm::kMuon));
  EXPECT_TRUE(contains(describe_plan_mismatch(saved, hash, make_owner_plan(extra, 2), shape_of),
                       "parameter 'new' is not in the checkpoint"));
  auto fewer = model_params();
  fewer.pop_back();
  EXPECT_TRUE(contains(describe_plan_mismatch(saved, hash, make_owner_plan(fewer, 2), shape_of),
                       "parameter 'bias' is in the checkpoint but not in this model"));
  auto moved = model_params();
  moved[3] = param("norm", {11}, Algorithm::kMuon);
  EXPECT_TRUE(contains(describe_plan_mismatch(saved, hash, make_owner_plan(moved, 2), shape_of),
                       "parameter 'norm' was adamw in the checkpoint but is routed to muon here"));
  auto regrouped = model_params();
  regrouped[0].group = 2;
  EXPECT_TRUE(contains(describe_plan_mismatch(saved, hash, make_owner_plan(regrouped, 2), shape_of),
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
