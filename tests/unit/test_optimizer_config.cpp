// test_optimizer_config.cpp: tests of the YAML `optimizer` section (optim/optimizer_config.h,
// base/yaml_fields.h): configs/optimizer.yaml, building MuonWithAdamW from YAML, every ConfigError
// (file:line, key path, expected value), defaults, the to_yaml round trip, and closest_match.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "base/errors.h"
#include "base/yaml_document.h"
#include "base/yaml_fields.h"
#include "engine/config/engine_config.h"
#include "optim/muon_with_adamw.h"
#include "optim/optimizer_config.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::contains;
using orthotron::testing::thrown_message;

// The repository root: $ORTHOTRON_SOURCE_DIR when set, else the source directory compiled in.
std::string repo_root() {
  if (const char* root = std::getenv("ORTHOTRON_SOURCE_DIR"); root != nullptr && *root != '\0') return root;
  return ORTHOTRON_SOURCE_DIR_DEFAULT;
}

std::string example_config_path() {
  return repo_root() + "/configs/optimizer.yaml";
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// 1-based number of the first line of `text` containing `needle`; 0 when none does.
int line_of(const std::string& text, const std::string& needle) {
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (contains(line, needle)) return n;
  }
  return 0;
}

// A YAML file under ::testing::TempDir(), unique to the running test, removed on destruction.
class TempYaml {
 public:
  explicit TempYaml(const std::string& text) {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string tag = std::string(info->test_suite_name()) + "_" + info->name();
    for (auto& c : tag) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    path_ = ::testing::TempDir() + "orthotron_" + tag + "_" + std::to_string(::getpid()) + "_" +
            std::to_string(counter++) + ".yaml";
    std::ofstream out(path_);
    out << text;
    out.close();
    if (!out) ADD_FAILURE() << "cannot write " << path_;
  }
  ~TempYaml() { std::remove(path_.c_str()); }
  TempYaml(const TempYaml&) = delete;
  TempYaml& operator=(const TempYaml&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Writes `yaml`, loads it, and checks the ConfigError names the file, the line (when > 0), and
// contains every fragment. Returns the message.
std::string expect_config_error(const std::string& yaml, int line, std::initializer_list<std::string> fragments) {
  TempYaml file(yaml);
  const std::string msg = thrown_message<ConfigError>([&] { load_optimizer_config(file.path()); });
  EXPECT_TRUE(contains(msg, file.path())) << "message does not name the file: " << msg;
  if (line > 0) {
    EXPECT_TRUE(contains(msg, file.path() + ":" + std::to_string(line) + ":"))
        << "message does not name line " << line << ": " << msg;
  }
  for (const auto& f : fragments) EXPECT_TRUE(contains(msg, f)) << "missing '" << f << "' in: " << msg;
  return msg;
}

void expect_muon_equal(const MuonOptions& a, const MuonOptions& b) {
  EXPECT_EQ(a.lr, b.lr);
  EXPECT_EQ(a.momentum, b.momentum);
  EXPECT_EQ(a.nesterov, b.nesterov);
  EXPECT_EQ(a.momentum_form, b.momentum_form);
  EXPECT_EQ(a.scale_mode, b.scale_mode);
  EXPECT_EQ(a.spectral_factor, b.spectral_factor);
  EXPECT_EQ(a.weight_decay, b.weight_decay);
  EXPECT_EQ(a.ns.schedule.name, b.ns.schedule.name);
  EXPECT_EQ(a.ns.schedule.coefficients, b.ns.schedule.coefficients);
  EXPECT_EQ(a.ns.schedule.norm_scale, b.ns.schedule.norm_scale);
  EXPECT_EQ(a.ns.schedule.eps, b.ns.schedule.eps);
  EXPECT_EQ(a.ns.steps, b.ns.steps);
  EXPECT_EQ(a.ns.compute_dtype, b.ns.compute_dtype);
}

void expect_adamw_equal(const AdamWOptions& a, const AdamWOptions& b) {
  EXPECT_EQ(a.lr, b.lr);
  EXPECT_EQ(a.beta1, b.beta1);
  EXPECT_EQ(a.beta2, b.beta2);
  EXPECT_EQ(a.eps, b.eps);
  EXPECT_EQ(a.weight_decay, b.weight_decay);
}

void expect_groups_equal(const std::vector<ParamGroup>& a, const std::vector<ParamGroup>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE("group " + std::to_string(i) + " '" + a[i].name + "'");
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_EQ(a[i].algorithm, b[i].algorithm);
    expect_muon_equal(a[i].muon, b[i].muon);
    expect_adamw_equal(a[i].adamw, b[i].adamw);
  }
}

// Compares everything but `origin` (a file:line that legitimately differs between sources).
void expect_rules_equal(const std::vector<RoutingRule>& a, const std::vector<RoutingRule>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE("rule " + std::to_string(i) + " '" + a[i].name + "'");
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_EQ(a[i].patterns, b[i].patterns);
    EXPECT_EQ(a[i].min_dim, b[i].min_dim);
    EXPECT_EQ(a[i].max_dim, b[i].max_dim);
    EXPECT_EQ(a[i].group, b[i].group);
    EXPECT_EQ(a[i].must_match, b[i].must_match);
  }
}

OptimizerConfig round_trip(const OptimizerConfig& config) {
  const std::string yaml = optimizer_config_to_yaml(config);
  TempYaml file(yaml);
  return load_optimizer_config(file.path());
}

// ---------------------------------------------------------------------------------------------
// configs/optimizer.yaml

TEST(OptimizerConfigExample, LoadsEveryGroupAndHyperparameter) {
  const std::string path = example_config_path();
  const OptimizerConfig c = load_optimizer_config(path);
  ASSERT_EQ(c.groups.size(), 3u);

  const ParamGroup& hidden = c.groups[0];
  EXPECT_EQ(hidden.name, "hidden");
  EXPECT_EQ(hidden.algorithm, Algorithm::kMuon);
  EXPECT_DOUBLE_EQ(hidden.muon.lr, 0.02);
  EXPECT_DOUBLE_EQ(hidden.muon.momentum, 0.95);
  EXPECT_TRUE(hidden.muon.nesterov);
  EXPECT_EQ(hidden.muon.momentum_form, MomentumForm::kEma);
  EXPECT_EQ(hidden.muon.scale_mode, ScaleMode::kOriginal);
  EXPECT_DOUBLE_EQ(hidden.muon.spectral_factor, 1.0);
  EXPECT_DOUBLE_EQ(hidden.muon.weight_decay, 0.0);
  EXPECT_EQ(hidden.muon.ns.schedule.name, "quintic");
  ASSERT_EQ(hidden.muon.ns.schedule.coefficients.size(), 1u);
  EXPECT_DOUBLE_EQ(hidden.muon.ns.schedule.coefficients[0][0], 3.4445);
  EXPECT_DOUBLE_EQ(hidden.muon.ns.schedule.coefficients[0][1], -4.7750);
  EXPECT_DOUBLE_EQ(hidden.muon.ns.schedule.coefficients[0][2], 2.0315);
  EXPECT_DOUBLE_EQ(hidden.muon.ns.schedule.norm_scale, 1.0);
  EXPECT_DOUBLE_EQ(hidden.muon.ns.schedule.eps, 1e-7);
  EXPECT_EQ(hidden.muon.ns.steps, 5);
  EXPECT_EQ(hidden.muon.ns.compute_dtype, at::kFloat);

  const ParamGroup& embeddings = c.groups[1];
  EXPECT_EQ(embeddings.name, "embeddings");
  EXPECT_EQ(embeddings.algorithm, Algorithm::kAdamW);
  EXPECT_DOUBLE_EQ(embeddings.adamw.lr, 0.003);
  EXPECT_DOUBLE_EQ(embeddings.adamw.beta1, 0.9);
  EXPECT_DOUBLE_EQ(embeddings.adamw.beta2, 0.95);  // not the 0.999 default: betas must reach the group
  EXPECT_DOUBLE_EQ(embeddings.adamw.eps, 1e-8);
  EXPECT_DOUBLE_EQ(embeddings.adamw.weight_decay, 0.0);  // not the 0.01 default

  const ParamGroup& adamw = c.groups[2];
  EXPECT_EQ(adamw.name, "adamw");
  EXPECT_EQ(adamw.algorithm, Algorithm::kAdamW);
  EXPECT_DOUBLE_EQ(adamw.adamw.lr, 0.001);
  EXPECT_DOUBLE_EQ(adamw.adamw.beta1, 0.9);
  EXPECT_DOUBLE_EQ(adamw.adamw.beta2, 0.95);
  EXPECT_DOUBLE_EQ(adamw.adamw.eps, 1e-8);
  EXPECT_DOUBLE_EQ(adamw.adamw.weight_decay, 0.01);
}

TEST(OptimizerConfigExample, LoadsRulesInOrderWithOrigins) {
  const std::string path = example_config_path();
  const std::string text = read_text(path);
  ASSERT_FALSE(text.empty()) << "cannot read " << path;
  const OptimizerConfig c = load_optimizer_config(path);
  ASSERT_EQ(c.rules.size(), 4u);

  EXPECT_EQ(c.rules[0].name, "embeddings");
  EXPECT_EQ(c.rules[0].patterns, (std::vector<std::string>{"*embed*", "*wte*", "*wpe*"}));
  EXPECT_EQ(c.rules[0].min_dim, 0);
  EXPECT_EQ(c.rules[0].max_dim, INT_MAX);
  EXPECT_EQ(c.rules[0].group, "embeddings");

  EXPECT_EQ(c.rules[1].name, "head_norms_biases");
  EXPECT_EQ(c.rules[1].patterns, (std::vector<std::string>{"*head*", "*norm*", "*bias"}));
  EXPECT_EQ(c.rules[1].min_dim, 0);
  EXPECT_EQ(c.rules[1].max_dim, INT_MAX);
  EXPECT_EQ(c.rules[1].group, "adamw");

  EXPECT_EQ(c.rules[2].name, "vectors");
  EXPECT_TRUE(c.rules[2].patterns.empty());
  EXPECT_EQ(c.rules[2].min_dim, 0);
  EXPECT_EQ(c.rules[2].max_dim, 1);
  EXPECT_EQ(c.rules[2].group, "adamw");

  EXPECT_EQ(c.rules[3].name, "hidden_matrices");
  EXPECT_TRUE(c.rules[3].patterns.empty());
  EXPECT_EQ(c.rules[3].min_dim, 2);
  EXPECT_EQ(c.rules[3].max_dim, INT_MAX);
  EXPECT_EQ(c.rules[3].group, "hidden");

  for (const auto& r : c.rules) {
    SCOPED_TRACE(r.name);
    // User rules must claim something, except the example's catch-all for other 1-D tensors.
    EXPECT_EQ(r.must_match, r.name != "vectors");
    const int line = line_of(text, "- name: " + r.name);
    ASSERT_GT(line, 0);
    EXPECT_EQ(r.origin, path + ":" + std::to_string(line));
  }
}

TEST(OptimizerConfigExample, RoutesAGptLikeModel) {
  const OptimizerConfig c = load_optimizer_config(example_config_path());
  NamedParameters params = {
      {"transformer.wte.weight", at::zeros({10, 8})},        {"transformer.wpe.weight", at::zeros({6, 8})},
      {"transformer.h.0.ln_1.weight", at::zeros({8})},       {"transformer.h.0.attn.c_attn.weight", at::zeros({24, 8})},
      {"transformer.h.0.attn.c_attn.bias", at::zeros({24})}, {"transformer.h.0.mlp.norm.weight", at::zeros({8})},
      {"transformer.h.0.mlp.scale", at::zeros({8})},         {"lm_head.weight", at::zeros({10, 8})}};
  auto opt = make_muon_with_adamw(params, c);
  const std::map<std::string, std::string> expected = {
      {"transformer.wte.weight", "embeddings"},      {"transformer.wpe.weight", "embeddings"},
      {"transformer.h.0.ln_1.weight", "adamw"},      {"transformer.h.0.attn.c_attn.weight", "hidden"},
      {"transformer.h.0.attn.c_attn.bias", "adamw"}, {"transformer.h.0.mlp.norm.weight", "adamw"},
      {"transformer.h.0.mlp.scale", "adamw"},        {"lm_head.weight", "adamw"}};
  ASSERT_EQ(opt->assignment().size(), expected.size());
  for (const auto& a : opt->assignment()) {
    EXPECT_EQ(opt->groups()[a.group_index].name, expected.at(a.param)) << a.param;
  }
}

// ---------------------------------------------------------------------------------------------
// A YAML file -> MuonWithAdamW

constexpr const char* kBuildYaml = R"(optimizer:
  groups:
    hidden:
      algorithm: muon
      lr: 0.05
      momentum: 0.9
    embed:
      algorithm: adamw
      lr: 0.004
      betas: [0.8, 0.99]
    adamw:
      weight_decay: 0.0
  rules:
    - name: embed_and_head
      match: ["embed.weight", "head.weight"]
      group: embed
    - name: norms_and_biases
      match: ["*norm*", "*bias"]
      group: adamw
    - name: matrices
      min_dim: 2
      group: hidden
)";

NamedParameters small_model() {
  at::manual_seed(7);
  auto p = [](std::vector<int64_t> shape) { return at::randn(shape).requires_grad_(true); };
  return {{"embed.weight", p({10, 8})},
          {"layers.0.attn.qkv.weight", p({24, 8})},
          {"layers.0.mlp.fc.weight", p({16, 8})},
          {"layers.0.norm.weight", p({8})},
          {"head.weight", p({10, 8})},
          {"layers.0.mlp.fc.bias", p({16})}};
}

TEST(OptimizerConfigBuild, MakeMuonWithAdamWRoutesEveryParameter) {
  TempYaml file(kBuildYaml);
  const OptimizerConfig c = load_optimizer_config(file.path());
  NamedParameters params = small_model();
  auto opt = make_muon_with_adamw(params, c);
  ASSERT_NE(opt, nullptr);

  struct Expect {
    std::string group;
    std::string rule;
  };
  const std::map<std::string, Expect> expected = {
      {"embed.weight", {"embed", "embed_and_head"}},      {"layers.0.attn.qkv.weight", {"hidden", "matrices"}},
      {"layers.0.mlp.fc.weight", {"hidden", "matrices"}}, {"layers.0.norm.weight", {"adamw", "norms_and_biases"}},
      {"head.weight", {"embed", "embed_and_head"}},       {"layers.0.mlp.fc.bias", {"adamw", "norms_and_biases"}},
  };
  const auto& assignment = opt->assignment();
  ASSERT_EQ(assignment.size(), params.size());
  for (size_t i = 0; i < assignment.size(); ++i) {
    const auto& a = assignment[i];
    EXPECT_EQ(a.param, params[i].name);  // assignment keeps the parameter order
    EXPECT_EQ(a.shape, params[i].tensor.sizes().vec());
    EXPECT_EQ(opt->groups()[a.group_index].name, expected.at(a.param).group) << a.param;
    EXPECT_EQ(a.rule, expected.at(a.param).rule) << a.param;
  }

  // The groups carry the YAML's hyperparameters (and AdamW betas in particular).
  ASSERT_EQ(opt->groups().size(), 3u);
  EXPECT_DOUBLE_EQ(opt->group("hidden").muon.lr, 0.05);
  EXPECT_DOUBLE_EQ(opt->group("hidden").muon.momentum, 0.9);
  EXPECT_DOUBLE_EQ(opt->group("embed").adamw.lr, 0.004);
  EXPECT_DOUBLE_EQ(opt->group("embed").adamw.beta1, 0.8);
  EXPECT_DOUBLE_EQ(opt->group("embed").adamw.beta2, 0.99);
  EXPECT_EQ(opt->group("adamw").algorithm, Algorithm::kAdamW);
  EXPECT_DOUBLE_EQ(opt->group("adamw").adamw.weight_decay, 0.0);

  // One step updates the caller's tensors in place, through the group each one was routed to.
  std::vector<at::Tensor> before;
  for (auto& p : params) {
    before.push_back(p.tensor.detach().clone());
    p.tensor.mutable_grad() = at::randn_like(p.tensor);
  }
  opt->step();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_FALSE(at::equal(before[i], params[i].tensor.detach())) << params[i].name << " did not change";
    EXPECT_EQ(opt->step_count(params[i].name), 1) << params[i].name;
  }
  EXPECT_TRUE(opt->muon_momentum("layers.0.attn.qkv.weight").defined());
  EXPECT_TRUE(opt->adamw_state("embed.weight").exp_avg.defined());
}

TEST(OptimizerConfigBuild, RoutingErrorsSurfaceFromMakeMuonWithAdamW) {
  TempYaml file(kBuildYaml);
  const OptimizerConfig c = load_optimizer_config(file.path());
  NamedParameters params = small_model();
  params.push_back({"layers.0.gate", at::zeros({})});  // 0-D: no rule of this config claims it
  const std::string msg = thrown_message<RoutingError>([&] { make_muon_with_adamw(params, c); });
  EXPECT_TRUE(contains(msg, "'layers.0.gate'")) << msg;
}

// ---------------------------------------------------------------------------------------------
// Bad input: each ConfigError names file:line, the dotted key and the expected value.

TEST(OptimizerConfigErrors, MisspelledGroupKeySuggestsClosest) {
  expect_config_error(
      R"(optimizer:
  groups:
    hidden:
      algorithm: muon
      lr: 0.02
      momentun: 0.9
)",
      6,
      {"unknown key 'momentun'", "optimizer.groups.hidden", "did you mean 'momentum'?", "(valid keys:", "ns_schedule"});
  expect_config_error(R"(optimizer:
  groups:
    adamw:
      beta: [0.9, 0.95]
)",
                      4, {"unknown key 'beta'", "optimizer.groups.adamw", "did you mean 'betas'?"});
}

TEST(OptimizerConfigErrors, MisspelledRuleKeySuggestsClosest) {
  expect_config_error(R"(optimizer:
  rules:
    - name: vectors
      max_dim: 1
      group: adamw
    - name: matrices
      mach: "*"
      group: muon
)",
                      7, {"unknown key 'mach'", "optimizer.rules[1]", "did you mean 'match'?"});
}

TEST(OptimizerConfigErrors, UnknownKeyInOptimizerSection) {
  const std::string msg =
      expect_config_error(R"(optimizer:
  groups:
    muon:
      lr: 0.01
  scheduler: cosine
)",
                          5, {"unknown key 'scheduler' in optimizer", "(valid keys: groups rules)"});
  EXPECT_FALSE(contains(msg, "did you mean")) << "no plausible suggestion exists: " << msg;

  expect_config_error(R"(optimizer:
  grups:
    muon:
      lr: 0.01
)",
                      2, {"unknown key 'grups' in optimizer", "did you mean 'groups'?"});
}

TEST(OptimizerConfigErrors, WrongTypes) {
  expect_config_error(R"(optimizer:
  groups:
    muon:
      momentum: 0.9
      lr: "abc"
)",
                      5, {"optimizer.groups.muon.lr must be a number", "got 'abc'"});
  expect_config_error(R"(optimizer:
  groups:
    muon:
      lr: [0.1, 0.2]
)",
                      4, {"optimizer.groups.muon.lr must be a number", "got a list"});
  expect_config_error(R"(optimizer:
  groups:
    muon:
      ns_steps: 2.5
)",
                      4, {"optimizer.groups.muon.ns_steps must be an integer", "got '2.5'"});
  expect_config_error(R"(optimizer:
  groups:
    muon:
      nesterov: maybe
)",
                      4, {"optimizer.groups.muon.nesterov must be true or false", "got 'maybe'"});
  expect_config_error(R"(optimizer:
  groups:
    adamw:
      betas: 0.9
)",
                      4, {"optimizer.groups.adamw.betas must be a list of numbers", "got '0.9'"});
}

TEST(OptimizerConfigErrors, MomentumOutOfRange) {
  expect_config_error(R"(optimizer:
  groups:
    muon:
      lr: 0.02
      momentum: 1.5
)",
                      5, {"optimizer.groups.muon.momentum must be in [0, 1)", "got 1.5"});
}

TEST(OptimizerConfigErrors, NsStepsOutOfRange) {
  expect_config_error(R"(optimizer:
  groups:
    muon:
      ns_steps: 0
)",
                      4, {"optimizer.groups.muon.ns_steps must be in [1, 100]", "got 0"});
}

TEST(OptimizerConfigErrors, BetasOutOfRange) {
  expect_config_error(R"(optimizer:
  groups:
    muon:
      lr: 0.02
    adamw:
      lr: 0.001
      betas: [0.9, 1.2]
)",
                      7, {"optimizer.groups.adamw.betas[1] must be in [0, 1)", "got 1.2"});
  expect_config_error(R"(optimizer:
  groups:
    adamw:
      betas: [0.9, 0.95, 0.99]
)",
                      4, {"optimizer.groups.adamw.betas must hold exactly 2 numbers", "got 3"});
}

TEST(OptimizerConfigErrors, EpsOutOfRange) {
  expect_config_error(R"(optimizer:
  groups:
    adamw:
      lr: 0.001
      eps: 0
)",
                      5, {"optimizer.groups.adamw.eps must be in (0, ", "got 0"});
}

TEST(OptimizerConfigErrors, BadEnumSuggestsClosest) {
  expect_config_error(R"(optimizer:
  groups:
    muon:
      lr: 0.02
      scale_mode: spectrl
)",
                      5,
                      {"optimizer.groups.muon.scale_mode must be one of original match_rms_adamw spectral",
                       "got 'spectrl'", "did you mean 'spectral'?"});
  expect_config_error(R"(optimizer:
  groups:
    hidden:
      algorithm: muom
)",
                      4, {"optimizer.groups.hidden.algorithm must be one of muon adamw", "did you mean 'muon'?"});
}

TEST(OptimizerConfigErrors, EmptyRuleList) {
  expect_config_error(R"(optimizer:
  groups:
    muon:
      lr: 0.01
    adamw:
      lr: 0.001
  rules: []
)",
                      7, {"optimizer.rules must be a non-empty list of rules"});
}

TEST(OptimizerConfigErrors, RuleNamingUndefinedGroup) {
  expect_config_error(
      R"(optimizer:
  groups:
    muon:
      lr: 0.01
    adamw: {}
  rules:
    - name: vectors
      max_dim: 1
      group: adamw
    - name: matrices
      min_dim: 2
      group: hiden
)",
      12, {"optimizer.rules[1].group", "rule 'matrices'", "group 'hiden'", "not defined", "(defined: muon adamw)"});
}

TEST(OptimizerConfigErrors, CustomScheduleWithoutCoefficients) {
  expect_config_error(
      R"(optimizer:
  groups:
    muon:
      lr: 0.02
      ns_schedule: custom
)",
      4, {"optimizer.groups.muon: ns_schedule is 'custom' but ns_coefficients is not given"});
}

TEST(OptimizerConfigErrors, CoefficientsWithoutCustomSchedule) {
  expect_config_error(R"(optimizer:
  groups:
    muon:
      ns_schedule: polar_express
      ns_coefficients: [[3.0, -4.0, 2.0]]
)",
                      5, {"optimizer.groups.muon.ns_coefficients is only read when ns_schedule is 'custom'"});
  expect_config_error(R"(optimizer:
  groups:
    muon:
      ns_coefficients: [[3.0, -4.0, 2.0]]
)",
                      4, {"optimizer.groups.muon.ns_coefficients is only read when ns_schedule is 'custom'"});
}

TEST(OptimizerConfigErrors, CoefficientTripleOfWrongLength) {
  expect_config_error(R"(optimizer:
  groups:
    muon:
      ns_schedule: custom
      ns_coefficients:
        - [3.4445, -4.7750, 2.0315]
        - [3.0, -4.0]
)",
                      7, {"optimizer.groups.muon.ns_coefficients[1]", "must hold exactly 3 numbers, got 2"});
  expect_config_error(R"(optimizer:
  groups:
    muon:
      ns_schedule: custom
      ns_coefficients: []
)",
                      5, {"optimizer.groups.muon.ns_coefficients must be a non-empty list of [a, b, c] triples"});
  expect_config_error(R"(optimizer:
  groups:
    muon:
      ns_schedule: custom
      ns_coefficients: [[3.0, x, 2.0]]
)",
                      0, {"optimizer.groups.muon.ns_coefficients[0]", "must be a list of finite numbers", "'x'"});
}

// Each triple's error carries the item's own line and key path.
TEST(OptimizerConfigErrors, CoefficientTripleOfWrongLengthNamesItsLine) {
  const std::string msg = expect_config_error(R"(optimizer:
  groups:
    muon:
      ns_schedule: custom
      ns_coefficients:
        - [3.4445, -4.7750, 2.0315]
        - [3.0, -4.0]
)",
                                              7, {"optimizer.groups.muon.ns_coefficients[1] must hold exactly 3"});
  EXPECT_FALSE(contains(msg, ".step")) << msg;
}

TEST(OptimizerConfigErrors, OtherStructuralErrors) {
  // The group's own key (line 3) is reported.
  const std::string msg =
      expect_config_error(R"(optimizer:
  groups:
    custom_group:
      lr: 0.1
)",
                          0, {"optimizer.groups.custom_group needs 'algorithm: muon' or 'algorithm: adamw'"});
  EXPECT_TRUE(contains(msg, ".yaml:3:")) << msg;
  expect_config_error(R"(optimizer:
  rules:
    - name: matrices
      min_dim: 3
      max_dim: 2
      group: muon
)",
                      5, {"optimizer.rules[0].max_dim (2) is below min_dim (3)"});
  expect_config_error(R"(optimizer:
  rules:
    - name: matrices
      min_dim: 2
)",
                      3, {"optimizer.rules[0] needs a 'group'"});
  expect_config_error(R"(optimizer:
  groups: {}
)",
                      2, {"optimizer.groups must be a non-empty mapping"});
  expect_config_error("optimizer: [1, 2]\n", 1, {"optimizer must be a mapping"});
}

TEST(OptimizerConfigErrors, MissingOptimizerSection) {
  expect_config_error("engine:\n  steps: 10\n", 1, {"unknown key 'engine' in the top level", "valid keys: optimizer"});
  expect_config_error("", 0, {"no top-level 'optimizer' section"});
}

TEST(OptimizerConfigErrors, YamlSyntaxError) {
  expect_config_error(R"(optimizer:
  groups:
    muon: ]
  rules: []
)",
                      3, {"YAML syntax error"});
}

TEST(OptimizerConfigErrors, UnreadableFile) {
  const std::string path =
      ::testing::TempDir() + "orthotron_no_such_dir_" + std::to_string(::getpid()) + "/optimizer.yaml";
  const std::string msg = thrown_message<ConfigError>([&] { load_optimizer_config(path); });
  EXPECT_TRUE(contains(msg, "cannot read config file '" + path + "'")) << msg;
}

TEST(OptimizerConfigErrors, ParseSectionDirectlyNamesItsFile) {
  const YAML::Node root = YAML::Load("optimizer:\n  groups:\n    muon:\n      momentum: -0.1\n");
  const std::string msg = thrown_message<ConfigError>(
      [&] { parse_optimizer_config(YamlSection(root["optimizer"], "inline.yaml", "optimizer")); });
  EXPECT_TRUE(contains(msg, "inline.yaml:4: optimizer.groups.muon.momentum must be in [0, 1)")) << msg;
}

// ---------------------------------------------------------------------------------------------
// Defaults

void expect_default_config(const OptimizerConfig& c) {
  expect_groups_equal(c.groups, default_groups());
  const auto defaults = default_routing_rules();
  expect_rules_equal(c.rules, defaults);
  ASSERT_EQ(c.rules.size(), defaults.size());
  for (size_t i = 0; i < c.rules.size(); ++i) {
    EXPECT_FALSE(c.rules[i].must_match) << c.rules[i].name;
    EXPECT_EQ(c.rules[i].origin, defaults[i].origin);
  }
}

TEST(OptimizerConfigDefaults, EmptySectionGivesDefaultGroupsAndRules) {
  TempYaml file("optimizer: {}\n");
  const OptimizerConfig c = load_optimizer_config(file.path());
  ASSERT_EQ(c.groups.size(), 2u);
  EXPECT_EQ(c.groups[0].name, "muon");
  EXPECT_EQ(c.groups[0].algorithm, Algorithm::kMuon);
  EXPECT_EQ(c.groups[1].name, "adamw");
  EXPECT_EQ(c.groups[1].algorithm, Algorithm::kAdamW);
  expect_default_config(c);
}

TEST(OptimizerConfigNs, NewtonSchulzSpeedOptionsReachTheGroup) {
  TempYaml file(R"(optimizer:
  groups:
    muon:
      ns_symmetric: true
      ns_gram: auto
      ns_parallel: products
)");
  const OptimizerConfig c = load_optimizer_config(file.path());
  ASSERT_EQ(c.groups[0].name, "muon");
  EXPECT_TRUE(c.groups[0].muon.ns.symmetric);
  EXPECT_EQ(c.groups[0].muon.ns.gram, NsGram::kAuto);
  EXPECT_EQ(c.groups[0].muon.ns.parallel, NsParallel::kProducts);
  EXPECT_FALSE(load_optimizer_config(example_config_path()).groups[0].muon.ns.symmetric);  // off by default
  expect_config_error(R"(optimizer:
  groups:
    muon:
      ns_symmetric: sometimes
)",
                      4, {"optimizer.groups.muon.ns_symmetric must be true or false", "got 'sometimes'"});
}

TEST(OptimizerConfigDefaults, OmittedKeysTakeTheOptionDefaults) {
  TempYaml file(R"(optimizer:
  groups:
    muon: {}
    adamw: {}
    polar:
      algorithm: muon
      ns_schedule: polar_express
)");
  const OptimizerConfig c = load_optimizer_config(file.path());
  ASSERT_EQ(c.groups.size(), 3u);
  EXPECT_EQ(c.groups[0].algorithm, Algorithm::kMuon);  // a group named "muon" may omit its algorithm
  expect_muon_equal(c.groups[0].muon, MuonOptions{});
  EXPECT_EQ(c.groups[1].algorithm, Algorithm::kAdamW);
  expect_adamw_equal(c.groups[1].adamw, AdamWOptions{});
  EXPECT_EQ(c.groups[2].muon.ns.schedule.name, "polar_express");
  EXPECT_DOUBLE_EQ(c.groups[2].muon.ns.schedule.eps, 1e-6);  // the schedule's own eps
  EXPECT_DOUBLE_EQ(c.groups[2].muon.ns.schedule.norm_scale, 1.02);
  expect_rules_equal(c.rules, default_routing_rules());
}

// ---------------------------------------------------------------------------------------------
// optimizer_config_to_yaml round trip

constexpr const char* kRichYaml = R"(optimizer:
  groups:
    hidden:
      algorithm: muon
      lr: 0.0123
      momentum: 0.9
      nesterov: false
      momentum_form: sum
      scale_mode: spectral
      spectral_factor: 0.37
      weight_decay: 0.05
      ns_schedule: custom
      ns_coefficients: [[3.4445, -4.7750, 2.0315], [1.875, -1.25, 0.375]]
      ns_steps: 7
      ns_eps: 3.0e-7
      ns_dtype: bfloat16
    experts:
      algorithm: muon
      scale_mode: match_rms_adamw
      ns_schedule: polar_express
      ns_dtype: float64
      ns_steps: 3
    embed:
      algorithm: adamw
      lr: 0.0031
      betas: [0.85, 0.97]
      eps: 1.0e-10
      weight_decay: 0.1
    adamw: {}
  rules:
    - name: embeddings
      match: ["*embed*", "head.weight"]
      group: embed
    - name: experts
      match: "*experts*"
      min_dim: 3
      max_dim: 3
      group: experts
    - match: "*"
      max_dim: 1
      group: adamw
    - name: matrices
      min_dim: 2
      group: hidden
)";

TEST(OptimizerConfigRoundTrip, ParsesEveryNonDefaultField) {
  TempYaml file(kRichYaml);
  const OptimizerConfig c = load_optimizer_config(file.path());
  ASSERT_EQ(c.groups.size(), 4u);
  const MuonOptions& h = c.groups[0].muon;
  EXPECT_EQ(c.groups[0].name, "hidden");
  EXPECT_DOUBLE_EQ(h.lr, 0.0123);
  EXPECT_DOUBLE_EQ(h.momentum, 0.9);
  EXPECT_FALSE(h.nesterov);
  EXPECT_EQ(h.momentum_form, MomentumForm::kSum);
  EXPECT_EQ(h.scale_mode, ScaleMode::kSpectral);
  EXPECT_DOUBLE_EQ(h.spectral_factor, 0.37);
  EXPECT_DOUBLE_EQ(h.weight_decay, 0.05);
  EXPECT_EQ(h.ns.schedule.name, "custom");
  EXPECT_EQ(h.ns.schedule.coefficients,
            (std::vector<NsCoefficients>{{3.4445, -4.7750, 2.0315}, {1.875, -1.25, 0.375}}));
  EXPECT_EQ(h.ns.steps, 7);
  EXPECT_DOUBLE_EQ(h.ns.schedule.eps, 3.0e-7);
  EXPECT_EQ(h.ns.compute_dtype, at::kBFloat16);

  const MuonOptions& e = c.groups[1].muon;
  EXPECT_EQ(e.scale_mode, ScaleMode::kMatchRmsAdamW);
  EXPECT_EQ(e.ns.schedule.name, "polar_express");
  EXPECT_EQ(e.ns.compute_dtype, at::kDouble);
  EXPECT_EQ(e.ns.steps, 3);

  const AdamWOptions& a = c.groups[2].adamw;
  EXPECT_EQ(c.groups[2].algorithm, Algorithm::kAdamW);
  EXPECT_DOUBLE_EQ(a.lr, 0.0031);
  EXPECT_DOUBLE_EQ(a.beta1, 0.85);
  EXPECT_DOUBLE_EQ(a.beta2, 0.97);
  EXPECT_DOUBLE_EQ(a.eps, 1.0e-10);
  EXPECT_DOUBLE_EQ(a.weight_decay, 0.1);

  ASSERT_EQ(c.rules.size(), 4u);
  EXPECT_EQ(c.rules[1].patterns, (std::vector<std::string>{"*experts*"}));  // a scalar is a one-item list
  EXPECT_EQ(c.rules[1].min_dim, 3);
  EXPECT_EQ(c.rules[1].max_dim, 3);
  EXPECT_EQ(c.rules[2].name, "rule 2");  // an unnamed rule is named by its index
}

TEST(OptimizerConfigRoundTrip, RichConfigSurvivesToYamlAndBack) {
  TempYaml file(kRichYaml);
  const OptimizerConfig first = load_optimizer_config(file.path());
  const std::string yaml = optimizer_config_to_yaml(first);
  // Every default is written out.
  EXPECT_TRUE(contains(yaml, "ns_dtype")) << yaml;
  EXPECT_TRUE(contains(yaml, "spectral_factor")) << yaml;
  const OptimizerConfig second = round_trip(first);
  expect_groups_equal(first.groups, second.groups);
  expect_rules_equal(first.rules, second.rules);
  // And a second trip is a fixed point of the text.
  EXPECT_EQ(optimizer_config_to_yaml(second), yaml);
}

TEST(OptimizerConfigRoundTrip, ExampleConfigSurvivesToYamlAndBack) {
  const OptimizerConfig first = load_optimizer_config(example_config_path());
  const OptimizerConfig second = round_trip(first);
  expect_groups_equal(first.groups, second.groups);
  expect_rules_equal(first.rules, second.rules);
}

TEST(OptimizerConfigRoundTrip, DefaultGroupsSurviveToYamlAndBack) {
  TempYaml file("optimizer: {}\n");
  const OptimizerConfig first = load_optimizer_config(file.path());
  const OptimizerConfig second = round_trip(first);
  expect_groups_equal(first.groups, second.groups);
  ASSERT_EQ(first.rules.size(), second.rules.size());
  for (size_t i = 0; i < first.rules.size(); ++i) {
    EXPECT_EQ(first.rules[i].name, second.rules[i].name);
    EXPECT_EQ(first.rules[i].patterns, second.rules[i].patterns);
    EXPECT_EQ(first.rules[i].min_dim, second.rules[i].min_dim);
    EXPECT_EQ(first.rules[i].max_dim, second.rules[i].max_dim);
    EXPECT_EQ(first.rules[i].group, second.rules[i].group);
    EXPECT_EQ(first.rules[i].must_match, second.rules[i].must_match);
  }
}

// must_match survives a round trip, so the built-in default rules stay lenient after being written
// out and read back: a model without biases (or embeddings) still routes.
TEST(OptimizerConfigRoundTrip, DefaultRulesKeepMustMatchFalse) {
  TempYaml file("optimizer: {}\n");
  const OptimizerConfig first = load_optimizer_config(file.path());
  const OptimizerConfig second = round_trip(first);
  expect_rules_equal(first.rules, second.rules);
  NamedParameters no_biases = {{"layers.0.fc.weight", at::zeros({4, 4})}};
  EXPECT_NO_THROW(make_muon_with_adamw(no_biases, first));
  EXPECT_NO_THROW(make_muon_with_adamw(no_biases, second));
}

// The undefined-group error names the key path and the line of the rule's `group:` key.
TEST(OptimizerConfigErrors, RuleNamingUndefinedGroupNamesKeyPath) {
  expect_config_error(R"(optimizer:
  rules:
    - name: matrices
      min_dim: 2
      group: hiden
)",
                      5, {"optimizer.rules[0].group"});
}

// ---------------------------------------------------------------------------------------------
// closest_match

TEST(ClosestMatch, FindsTheNearestCandidate) {
  const std::vector<std::string> muon_keys = {"lr", "momentum", "nesterov", "weight_decay", "ns_steps"};
  EXPECT_EQ(closest_match("momentun", muon_keys), "momentum");           // one substitution
  EXPECT_EQ(closest_match("momentum", muon_keys), "momentum");           // exact
  EXPECT_EQ(closest_match("nestrov", muon_keys), "nesterov");            // one deletion
  EXPECT_EQ(closest_match("weight_decayy", muon_keys), "weight_decay");  // one insertion
  EXPECT_EQ(closest_match("ns_step", muon_keys), "ns_steps");
  EXPECT_EQ(closest_match("spectrl", {"original", "match_rms_adamw", "spectral"}), "spectral");
  EXPECT_EQ(closest_match("grups", {"groups", "rules"}), "groups");
}

TEST(ClosestMatch, ReturnsEmptyWhenNothingIsPlausible) {
  EXPECT_EQ(closest_match("scheduler", {"groups", "rules"}), "");
  EXPECT_EQ(closest_match("learning_rate", {"lr", "momentum"}), "");
  EXPECT_EQ(closest_match("momentum", {}), "");
}

TEST(ClosestMatch, TiesGoToTheFirstCandidate) {
  EXPECT_EQ(closest_match("ab", {"ac", "ad"}), "ac");
  EXPECT_EQ(closest_match("ab", {"ad", "ac"}), "ad");
}

TEST(ClosestMatch, ThresholdGrowsWithWordLength) {
  // Short words: up to 2 edits. "xyz" -> "lr" is 3 edits away.
  EXPECT_EQ(closest_match("lx", {"lr"}), "lr");
  EXPECT_EQ(closest_match("xyz", {"lr"}), "");
  // 12 letters: up to 4 edits.
  EXPECT_EQ(closest_match("wieght_dekay", {"weight_decay"}), "weight_decay");  // 3 edits
  EXPECT_EQ(closest_match("wxxxxt_decay", {"weight_decay"}), "weight_decay");  // 4 substitutions
  EXPECT_EQ(closest_match("wxxxxx_decay", {"weight_decay"}), "");              // 5 substitutions
}

// ---- hostile YAML found accepted or mishandled before the hardening, each with its guard ----

TEST(OptimizerConfigHostile, DuplicateKeyNamesItsLine) {
  expect_config_error("optimizer:\n  groups:\n    muon:\n      lr: 0.1\n      lr: 0.2\n", 5, {"duplicate key 'lr'"});
}

TEST(OptimizerConfigHostile, DuplicateGroupNamesItsLine) {
  expect_config_error("optimizer:\n  groups:\n    muon:\n      lr: 0.1\n    muon:\n      lr: 0.2\n", 5,
                      {"duplicate key 'muon'"});
}

TEST(OptimizerConfigHostile, UnknownTopLevelKeysAreErrorsWithSuggestions) {
  expect_config_error("optimizer:\n  groups: {muon: {lr: 0.1}, adamw: {}}\noptimiser:\n  groups: {}\n", 3,
                      {"unknown key 'optimiser' in the top level", "did you mean 'optimizer'?"});
  expect_config_error("optimzer:\n  groups: {}\n", 1, {"unknown key 'optimzer'", "did you mean 'optimizer'?"});
}

TEST(OptimizerConfigHostile, ASecondDocumentIsRefused) {
  expect_config_error("optimizer: {}\n---\noptimizer: {groups: {muon: {lr: 5}}}\n", 0, {"more than one YAML document"});
}

TEST(OptimizerConfigHostile, DivergingCustomCoefficientsAreRefusedBeforeTraining) {
  expect_config_error(
      "optimizer:\n  groups:\n    muon:\n      ns_schedule: custom\n      ns_coefficients: [[10, 10, 10]]\n"
      "    adamw: {}\n",
      4, {"optimizer.groups.muon", "Newton-Schulz schedule 'custom' diverges", "check ns_coefficients"});
}

TEST(OptimizerConfigHostile, AbsurdValuesNameTheirKey) {
  expect_config_error("optimizer:\n  groups:\n    muon:\n      lr: 1e300\n    adamw: {}\n", 4,
                      {"optimizer.groups.muon.lr must be in [0, 10], got 1e+300"});
  expect_config_error("optimizer:\n  groups:\n    muon: {}\n    adamw:\n      weight_decay: 50\n      lr: 0.1\n", 5,
                      {"optimizer.groups.adamw", "lr x weight_decay must be < 1"});
}

TEST(OptimizerConfigHostile, AliasCyclesAndDeepNestingEndWithAnError) {
  expect_config_error("optimizer: &a\n  groups: *a\n", 0, {"nested deeper than 32"});
  expect_config_error("optimizer: " + std::string(200, '[') + std::string(200, ']') + "\n", 0, {});
}

TEST(OptimizerConfigHostile, EveryShippedConfigLoads) {
  std::vector<std::string> paths;
  for (const auto& entry : std::filesystem::directory_iterator(repo_root() + "/configs")) {
    if (entry.path().extension() == ".yaml") paths.push_back(entry.path().string());
  }
  ASSERT_GE(paths.size(), 4u) << "configs/ should ship optimizer.yaml and the GPT configs";
  for (const auto& path : paths) {
    // An optimizer-only file through the optimizer's loader, a run's config through the engine's.
    if (load_yaml_file(path).size() == 1) {
      EXPECT_NO_THROW(load_optimizer_config(path)) << path;
    } else {
      EXPECT_NO_THROW(load_engine_config(path)) << path;
    }
  }
}

}  // namespace
}  // namespace orthotron
