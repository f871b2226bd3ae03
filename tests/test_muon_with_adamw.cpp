// test_muon_with_adamw.cpp: the MuonWithAdamW container: routing into groups, its batched step
// against the per-parameter reference, the three-models state round trip, and every load error.
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "optim/muon_with_adamw.h"
#include "parallel/errors.h"

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

NamedParameters clone_params(const NamedParameters& src) {
  NamedParameters out;
  for (const auto& p : src) out.push_back({p.name, p.tensor.detach().clone().requires_grad_(true)});
  return out;
}

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
  return ::testing::TempDir() + "/orthotron_" + name;
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
    for (auto& p : ref) {
      const at::Tensor grad = p.tensor.grad();
      at::Tensor t = p.tensor;
      const bool is_muon =
          p.tensor.dim() >= 2 && p.name.find("embed") == std::string::npos && p.name.find("head") == std::string::npos;
      if (is_muon) {
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
  opt_b->save(path);
  opt_b = std::make_unique<MuonWithAdamW>(b, test_groups());
  const LoadReport report = opt_b->load(path);
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

TEST(MuonWithAdamW, LoadRestoresGroupHyperparameters) {
  auto params = make_params(5);
  MuonWithAdamW src(params, test_groups());
  set_grads(params, 0);
  src.step();
  MuonWithAdamW dst(params);  // default hyperparameters
  dst.load_state_dict(src.state_dict());
  EXPECT_DOUBLE_EQ(dst.group("muon").muon.lr, 0.05);
  EXPECT_DOUBLE_EQ(dst.group("muon").muon.weight_decay, 0.1);
  EXPECT_DOUBLE_EQ(dst.group("adamw").adamw.beta2, 0.95);
  EXPECT_DOUBLE_EQ(dst.group("adamw").adamw.weight_decay, 0.05);
  EXPECT_TRUE(at::equal(dst.muon_momentum("layers.0.attn.qkv.weight"), src.muon_momentum("layers.0.attn.qkv.weight")));
}

// ---- load errors: each path triggered, with its message checked ----

class LoadErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    params_ = make_params(6);
    opt_ = std::make_unique<MuonWithAdamW>(params_, test_groups());
    set_grads(params_, 0);
    opt_->step();
    sd_ = opt_->state_dict();
  }
  nlohmann::json state() const { return nlohmann::json::parse(sd_.metadata.at("orthotron.state")); }
  void set_state(const nlohmann::json& j) { sd_.metadata["orthotron.state"] = j.dump(); }
  // Loads sd_ into a fresh optimizer over the same parameters and expects a StateDictError whose
  // message contains every one of `needles`; then checks nothing changed.
  void expect_error(const std::vector<std::string>& needles) {
    MuonWithAdamW fresh(params_, default_groups());
    try {
      fresh.load_state_dict(sd_);
      ADD_FAILURE() << "expected StateDictError";
    } catch (const StateDictError& e) {
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fresh.muon_momentum("layers.0.attn.qkv.weight").defined()) << "a failed load changed state";
    EXPECT_DOUBLE_EQ(fresh.group("muon").muon.lr, MuonOptions{}.lr) << "a failed load changed hyperparameters";
  }
  NamedParameters params_;
  std::unique_ptr<MuonWithAdamW> opt_;
  StateDict sd_;
};

TEST_F(LoadErrors, NotAnOrthotronStateDict) {
  sd_.metadata.erase("orthotron.format");
  expect_error({"orthotron.format"});
}
TEST_F(LoadErrors, WrongFormat) {
  sd_.metadata["orthotron.format"] = "model_weights";
  expect_error({"model_weights", "optimizer_state"});
}
TEST_F(LoadErrors, FormatVersion) {
  sd_.metadata["orthotron.format_version"] = "99";
  expect_error({"version 99", "version 1"});
}
TEST_F(LoadErrors, OptimizerKind) {
  sd_.metadata["orthotron.optimizer"] = "AdamW";
  expect_error({"'AdamW'", "MuonWithAdamW"});
}
TEST_F(LoadErrors, StateNotJson) {
  sd_.metadata["orthotron.state"] = "{not json";
  expect_error({"not valid JSON"});
}
TEST_F(LoadErrors, MissingMuonSection) {
  auto j = state();
  j.erase("muon");
  set_state(j);
  expect_error({"'muon' section is missing"});
}
TEST_F(LoadErrors, MissingAdamWSection) {
  auto j = state();
  j.erase("adamw");
  set_state(j);
  expect_error({"'adamw' section is missing"});
}
TEST_F(LoadErrors, MissingGroup) {
  auto j = state();
  j["muon"]["groups"].erase("muon");
  set_state(j);
  expect_error({"group 'muon' is missing"});
}
TEST_F(LoadErrors, UnexpectedGroup) {
  auto j = state();
  j["adamw"]["groups"]["extra"] = j["adamw"]["groups"]["adamw"];
  set_state(j);
  expect_error({"unexpected group 'extra'"});
}
TEST_F(LoadErrors, MalformedGroupHyperparameter) {
  auto j = state();
  j["muon"]["groups"]["muon"].erase("momentum");
  set_state(j);
  expect_error({"group 'muon'", "momentum"});
}
TEST_F(LoadErrors, GroupAlgorithmMismatch) {
  auto j = state();
  j["muon"]["groups"]["muon"] = j["adamw"]["groups"]["adamw"];
  j["muon"]["groups"]["muon"]["name"] = "muon";
  set_state(j);
  expect_error({"group 'muon' is adamw in the state dict"});
}
TEST_F(LoadErrors, MissingParamsObject) {
  auto j = state();
  j["adamw"].erase("params");
  set_state(j);
  expect_error({"'adamw' section has no 'params'"});
}
TEST_F(LoadErrors, MissingParameter) {
  auto j = state();
  j["muon"]["params"].erase("layers.0.mlp.proj.weight");
  set_state(j);
  sd_.tensors.erase("muon/layers.0.mlp.proj.weight/momentum");
  expect_error({"parameter 'layers.0.mlp.proj.weight' is missing from the 'muon' section"});
}
TEST_F(LoadErrors, UnexpectedParameter) {
  auto j = state();
  j["adamw"]["params"]["ghost.bias"] = j["adamw"]["params"]["layers.0.mlp.fc.bias"];
  set_state(j);
  expect_error({"unexpected parameter 'ghost.bias'"});
}
TEST_F(LoadErrors, ParameterSwitchedAlgorithm) {
  auto j = state();
  j["adamw"]["params"]["layers.0.attn.proj.weight"] = j["muon"]["params"]["layers.0.attn.proj.weight"];
  j["muon"]["params"].erase("layers.0.attn.proj.weight");
  set_state(j);
  expect_error({"'layers.0.attn.proj.weight' was optimized by adamw"});
}
TEST_F(LoadErrors, ParameterShape) {
  auto j = state();
  j["muon"]["params"]["layers.0.attn.proj.weight"]["shape"] = {16, 17};
  set_state(j);
  expect_error({"'layers.0.attn.proj.weight' has shape [16, 17]"});
}
TEST_F(LoadErrors, ParameterDtype) {
  auto j = state();
  j["muon"]["params"]["layers.0.attn.proj.weight"]["dtype"] = "BF16";
  set_state(j);
  expect_error({"dtype BF16", "F32"});
}
TEST_F(LoadErrors, MalformedParameterEntry) {
  auto j = state();
  j["muon"]["params"]["layers.0.attn.proj.weight"].erase("step");
  set_state(j);
  expect_error({"entry of parameter 'layers.0.attn.proj.weight' is malformed"});
}
TEST_F(LoadErrors, MissingTensor) {
  sd_.tensors.erase("adamw/embed.weight/exp_avg_sq");
  expect_error({"tensor 'adamw/embed.weight/exp_avg_sq' is missing"});
}
TEST_F(LoadErrors, TensorShape) {
  sd_.tensors["muon/layers.0.attn.qkv.weight/momentum"] = at::zeros({47, 16});
  expect_error({"muon/layers.0.attn.qkv.weight/momentum", "[47, 16]"});
}
TEST_F(LoadErrors, TensorDtype) {
  sd_.tensors["muon/layers.0.attn.qkv.weight/momentum"] = at::zeros({48, 16}, at::kDouble);
  expect_error({"muon/layers.0.attn.qkv.weight/momentum", "Double"});
}
TEST_F(LoadErrors, UnexpectedTensor) {
  sd_.tensors["muon/layers.0.attn.qkv.weight/second_moment"] = at::zeros({48, 16});
  expect_error({"unexpected tensor 'muon/layers.0.attn.qkv.weight/second_moment'"});
}

TEST_F(LoadErrors, PartialLoadReportsWhatItSkipped) {
  auto j = state();
  j["muon"]["params"].erase("layers.0.mlp.proj.weight");
  j["adamw"]["params"]["ghost.bias"] = j["adamw"]["params"]["layers.0.mlp.fc.bias"];
  set_state(j);
  sd_.tensors.erase("muon/layers.0.mlp.proj.weight/momentum");
  MuonWithAdamW fresh(params_, default_groups());
  LoadOptions partial;
  partial.allow_partial = true;
  const LoadReport report = fresh.load_state_dict(sd_, partial);
  ASSERT_EQ(report.skipped.size(), 2u) << report.to_string();
  EXPECT_NE(report.to_string().find("layers.0.mlp.proj.weight"), std::string::npos);
  EXPECT_NE(report.to_string().find("ghost.bias"), std::string::npos);
  // What was present was loaded; what was skipped keeps fresh state.
  EXPECT_TRUE(
      at::equal(fresh.muon_momentum("layers.0.attn.qkv.weight"), opt_->muon_momentum("layers.0.attn.qkv.weight")));
  EXPECT_FALSE(fresh.muon_momentum("layers.0.mlp.proj.weight").defined());
  // Version mismatches are never skipped.
  sd_.metadata["orthotron.format_version"] = "2";
  EXPECT_THROW(fresh.load_state_dict(sd_, partial), StateDictError);
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
  EXPECT_THROW(opt.load(path), FormatError);
  EXPECT_THROW(opt.load(temp_path("does_not_exist.safetensors")), FormatError);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace orthotron
