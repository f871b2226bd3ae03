// test_muon_with_adamw.cpp: the MuonWithAdamW container: routing into groups, its batched step
// against the per-parameter reference, the three-models state round trip, and every load error.
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "base/errors.h"
#include "engine/optimizer_state_files.h"
#include "gpt_fixture.h"
#include "optim/muon_with_adamw.h"
#include "test_util.h"

namespace orthotron {
namespace {

// A small GPT-shaped parameter set: embeddings, fused QKV, MLP, norms, biases, head, and a 3-D expert stack.
NamedParameters make_params(uint64_t seed) {
  at::manual_seed(seed);
  auto p = [](std::vector<int64_t> shape) { return at::randn(shape).mul_(0.1).requires_grad_(true); };
  return {{"embed.weight", p({32, 16})},
          {"layers.0.attn.qkv.weight", p({48, 16})},
          {"layers.0.attn.proj.weight", p({16, 16})},
          {"layers.0.mlp.fc.weight", p({64, 16})},
          {"layers.0.mlp.fc.bias", p({64})},
          {"layers.0.mlp.proj.weight", p({16, 64})},
          {"layers.0.norm.weight", p({16})},
          {"layers.1.attn.proj.weight", p({16, 16})},
          {"layers.1.moe.experts", p({4, 8, 16})},
          {"head.weight", p({32, 16})}};
}

using orthotron::testing::clone_params;

// Deterministic gradients for step `step`; `skip` leaves one parameter without a gradient.
void set_grads(NamedParameters& params, int step, const std::string& skip = "") {
  at::manual_seed(1000 + step);
  for (auto& p : params) {
    at::Tensor g = at::randn(p.tensor.sizes());
    if (p.name == skip) {
      p.tensor.mutable_grad() = at::Tensor();
    } else {
      p.tensor.mutable_grad() = g;
    }
  }
}

std::vector<ParamGroup> test_groups() {
  auto groups = default_groups();
  groups[0].muon.lr = 0.05;
  groups[0].muon.weight_decay = 0.1;
  groups[1].adamw.lr = 0.01;
  groups[1].adamw.beta2 = 0.95;
  groups[1].adamw.weight_decay = 0.05;
  return groups;
}

bool params_equal(const NamedParameters& a, const NamedParameters& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (!at::equal(a[i].tensor, b[i].tensor)) return false;
  }
  return true;
}

std::string temp_path(const std::string& name) {
  return orthotron::testing::unique_temp_path(name);
}

TEST(MuonWithAdamW, DefaultRoutingSendsHiddenMatricesToMuon) {
  auto params = make_params(1);
  MuonWithAdamW opt(params);
  std::map<std::string, std::string> group_of;
  for (const auto& a : opt.assignment()) group_of[a.param] = opt.groups()[a.group_index].name;
  EXPECT_EQ(group_of["embed.weight"], "adamw");
  EXPECT_EQ(group_of["head.weight"], "adamw");
  EXPECT_EQ(group_of["layers.0.norm.weight"], "adamw");
  EXPECT_EQ(group_of["layers.0.mlp.fc.bias"], "adamw");
  EXPECT_EQ(group_of["layers.0.attn.qkv.weight"], "muon");
  EXPECT_EQ(group_of["layers.0.mlp.proj.weight"], "muon");
  EXPECT_EQ(group_of["layers.1.moe.experts"], "muon");
  const std::string table = opt.assignment_table();
  EXPECT_NE(table.find("layers.1.moe.experts"), std::string::npos);
  EXPECT_NE(table.find("embeddings_and_head"), std::string::npos);
}

// The container batches same-shape matrices into one NS call; the reference is muon_step /
// adamw_step applied parameter by parameter.
TEST(MuonWithAdamW, BatchedStepEqualsPerParameterReference) {
  auto params = make_params(2);
  auto ref = clone_params(params);
  const auto groups = test_groups();
  MuonWithAdamW opt(params, groups);
  std::map<std::string, at::Tensor> momentum;
  std::map<std::string, AdamWState> adam;
  for (int step = 0; step < 5; ++step) {
    set_grads(params, step);
    set_grads(ref, step);
    opt.step();
    c10::NoGradGuard no_grad;
    for (size_t i = 0; i < ref.size(); ++i) {
      auto& p = ref[i];
      const at::Tensor grad = p.tensor.grad();
      at::Tensor t = p.tensor;
      // The routing itself is tested in test_param_routing.cpp; here the reference follows it.
      if (opt.plan()[i].algorithm == Algorithm::kMuon) {
        if (!momentum.count(p.name)) momentum[p.name] = at::zeros_like(t);
        muon_step(t, grad, momentum[p.name], groups[0].muon, p.name);
      } else {
        adamw_step(t, grad, adam[p.name], groups[1].adamw);
      }
    }
  }
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(at::allclose(params[i].tensor, ref[i].tensor, 0, 1e-6)) << params[i].name;
  }
  EXPECT_EQ(opt.step_count("layers.0.attn.proj.weight"), 5);
  EXPECT_EQ(opt.adamw_state("embed.weight").step, 5);
}

// ns_parallel: matrices runs every matrix's Newton-Schulz on one thread, whole matrices side by
// side; the step gives the bits of ns_parallel: products at the same thread count.
TEST(MuonWithAdamW, MatrixParallelNsGivesTheBitsOfProducts) {
  const int saved = at::get_num_threads();
  auto run = [&](NsParallel mode, at::ScalarType ns_dtype, NsGram gram) {
    auto params = make_params(4);
    auto groups = test_groups();
    groups[0].muon.ns.parallel = mode;
    groups[0].muon.ns.compute_dtype = ns_dtype;
    groups[0].muon.ns.gram = gram;
    MuonWithAdamW opt(params, groups);
    for (int step = 0; step < 3; ++step) {
      set_grads(params, step);
      opt.step();
    }
    return params;
  };
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      for (const auto gram : {NsGram::kOff, NsGram::kOn}) {
        SCOPED_TRACE(std::string(c10::toString(dtype)) + (gram == NsGram::kOn ? " gram" : " plain") + " at " +
                     std::to_string(threads) + " threads");
        EXPECT_TRUE(params_equal(run(NsParallel::kMatrices, dtype, gram), run(NsParallel::kProducts, dtype, gram)));
      }
    }
  }
  at::set_num_threads(saved);
}

TEST(MuonWithAdamW, ParameterWithoutGradientIsSkipped) {
  auto params = make_params(3);
  MuonWithAdamW opt(params, test_groups());
  const at::Tensor before = params[2].tensor.detach().clone();
  const at::Tensor emb_before = params[0].tensor.detach().clone();
  set_grads(params, 0, "layers.0.attn.proj.weight");
  params[0].tensor.mutable_grad() = at::Tensor();
  opt.step();
  EXPECT_TRUE(at::equal(params[2].tensor, before));
  EXPECT_TRUE(at::equal(params[0].tensor, emb_before));
  EXPECT_EQ(opt.step_count("layers.0.attn.proj.weight"), 0);
  EXPECT_EQ(opt.step_count("layers.0.attn.qkv.weight"), 1);
  EXPECT_FALSE(opt.muon_momentum("layers.0.attn.proj.weight").defined());
  opt.zero_grad();
  for (const auto& p : params) EXPECT_FALSE(p.tensor.grad().defined()) << p.name;
}

// Three models: uninterrupted; save/load/continue; fresh restart. The first two are bitwise equal,
// the third differs (the state matters and round-trips).
TEST(MuonWithAdamW, ThreeModelsStateRoundTrip) {
  const auto init = make_params(4);
  auto a = clone_params(init), b = clone_params(init), c = clone_params(init);
  MuonWithAdamW opt_a(a, test_groups());
  auto opt_b = std::make_unique<MuonWithAdamW>(b, test_groups());
  auto opt_c = std::make_unique<MuonWithAdamW>(c, test_groups());
  for (int step = 0; step < 4; ++step) {
    set_grads(a, step);
    set_grads(b, step);
    set_grads(c, step);
    opt_a.step();
    opt_b->step();
    opt_c->step();
  }
  const std::string path = temp_path("three_models.safetensors");
  save_optimizer_state(*opt_b, path);
  opt_b = std::make_unique<MuonWithAdamW>(b, test_groups());
  const LoadReport report = load_optimizer_state(*opt_b, path);
  EXPECT_TRUE(report.complete()) << report.to_string();
  opt_c = std::make_unique<MuonWithAdamW>(c, test_groups());
  for (int step = 4; step < 8; ++step) {
    set_grads(a, step);
    set_grads(b, step);
    set_grads(c, step);
    opt_a.step();
    opt_b->step();
    opt_c->step();
  }
  EXPECT_TRUE(params_equal(a, b));
  EXPECT_FALSE(params_equal(a, c));
  EXPECT_EQ(opt_b->step_count("embed.weight"), 8);
  std::remove(path.c_str());
}

// Resume rule: the running config's hyperparameters win; every stored value that differs is
// reported, so a resume with a lower lr in the YAML trains at that lr and says so.
TEST(MuonWithAdamW, LoadKeepsConfiguredHyperparametersAndReportsDifferences) {
  auto params = make_params(5);
  MuonWithAdamW src(params, test_groups());
  set_grads(params, 0);
  src.step();
  MuonWithAdamW dst(params);  // default hyperparameters
  const LoadReport report = dst.load_state_dict(src.state_dict());
  EXPECT_DOUBLE_EQ(dst.group("muon").muon.lr, MuonOptions{}.lr);
  EXPECT_DOUBLE_EQ(dst.group("adamw").adamw.beta2, AdamWOptions{}.beta2);
  EXPECT_TRUE(report.complete());
  const std::string text = report.to_string();
  EXPECT_NE(text.find("group 'muon': lr 0.05 in the state, 0.02 in the config; the config's value is used"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("group 'adamw': betas [0.9,0.95] in the state, [0.9,0.999] in the config"), std::string::npos)
      << text;
  EXPECT_TRUE(at::equal(dst.muon_momentum("layers.0.attn.qkv.weight"), src.muon_momentum("layers.0.attn.qkv.weight")));
  // Same hyperparameters: nothing to report.
  MuonWithAdamW same(params, test_groups());
  EXPECT_TRUE(same.load_state_dict(src.state_dict()).changed_hyperparameters.empty());
}

TEST(MuonWithAdamW, PartialLoadReportsWhatItSkipped) {
  auto params = make_params(6);
  MuonWithAdamW opt(params, test_groups());
  set_grads(params, 0);
  opt.step();
  StateDict sd = opt.state_dict();
  auto j = nlohmann::json::parse(sd.metadata.at("orthotron.state"));
  j["muon"]["params"].erase("layers.0.mlp.proj.weight");
  j["adamw"]["params"]["ghost.bias"] = j["adamw"]["params"]["layers.0.mlp.fc.bias"];
  sd.metadata["orthotron.state"] = j.dump();
  sd.tensors.erase("muon/layers.0.mlp.proj.weight/momentum");
  MuonWithAdamW fresh(params, test_groups());
  LoadOptions partial;
  partial.allow_partial = true;
  const LoadReport report = fresh.load_state_dict(sd, partial);
  ASSERT_EQ(report.skipped.size(), 2u) << report.to_string();
  EXPECT_NE(report.to_string().find("layers.0.mlp.proj.weight"), std::string::npos);
  EXPECT_NE(report.to_string().find("ghost.bias"), std::string::npos);
  // What was present was loaded; what was skipped keeps fresh state.
  EXPECT_TRUE(
      at::equal(fresh.muon_momentum("layers.0.attn.qkv.weight"), opt.muon_momentum("layers.0.attn.qkv.weight")));
  EXPECT_FALSE(fresh.muon_momentum("layers.0.mlp.proj.weight").defined());
  // Version mismatches and non-finite values are never skipped.
  StateDict nan = opt.state_dict();
  nan.tensors["muon/layers.0.attn.qkv.weight/momentum"] = at::full({48, 16}, NAN);
  EXPECT_THROW(fresh.load_state_dict(nan, partial), StateDictError);
  sd.metadata["orthotron.format_version"] = "1";
  EXPECT_THROW(fresh.load_state_dict(sd, partial), StateDictError);
}

TEST(MuonWithAdamW, FileThatIsNotSafetensorsIsAFormatError) {
  const std::string path = temp_path("garbage.safetensors");
  {
    FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fputs("this is not a safetensors file at all", f);
    std::fclose(f);
  }
  auto params = make_params(7);
  MuonWithAdamW opt(params);
  EXPECT_THROW(load_optimizer_state(opt, path), StateDictError);
  EXPECT_THROW(load_optimizer_state(opt, temp_path("does_not_exist.safetensors")), StateDictError);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace orthotron
