// test_param_routing.cpp: tests of parameter routing (optim/param_routing.h): the default rules on a
// GPT-like model, first-match-wins, every RoutingError, rank filters and glob lists, the assignment
// table, and MuonWithAdamW's validation of group hyperparameters.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <climits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "base/errors.h"
#include "optim/muon_with_adamw.h"
#include "optim/param_routing.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::contains;
using orthotron::testing::thrown_message;

// Routing needs names and logical shapes only: no tensor is allocated.
ParamShape param(const std::string& name, std::vector<int64_t> shape) {
  return {name, std::move(shape)};
}

// The containers take tensors.
NamedParameter tensor_param(const std::string& name, const std::vector<int64_t>& shape) {
  return {name, at::zeros(shape)};
}

RoutingRule rule(const std::string& name, std::vector<std::string> patterns, const std::string& group, int min_dim = 0,
                 int max_dim = INT_MAX) {
  RoutingRule r;
  r.name = name;
  r.patterns = std::move(patterns);
  r.group = group;
  r.min_dim = min_dim;
  r.max_dim = max_dim;
  r.origin = "test.yaml:" + name;
  return r;
}

ParamGroup group(const std::string& name, Algorithm algorithm) {
  ParamGroup g;
  g.name = name;
  g.algorithm = algorithm;
  return g;
}

// param name -> "group/rule" for every assignment.
std::map<std::string, std::string> routed(const std::vector<Assignment>& assignment,
                                          const std::vector<ParamGroup>& groups) {
  std::map<std::string, std::string> out;
  for (const auto& a : assignment) out[a.param] = groups.at(a.group_index).name + "/" + a.rule;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Default rules

TEST(DefaultRouting, GptLikeModel) {
  const std::vector<ParamShape> params = {
      param("transformer.wte.weight", {50, 16}),
      param("transformer.wpe.weight", {32, 16}),
      param("model.embed_tokens.weight", {50, 16}),
      param("transformer.h.0.ln_1.weight", {16}),
      param("transformer.h.0.ln_1.bias", {16}),
      param("transformer.h.0.attn.c_attn.weight", {48, 16}),
      param("transformer.h.0.attn.c_attn.bias", {48}),
      param("layers.0.attn.q_norm.weight", {8}),
      param("layers.0.mlp.fc.weight", {64, 16}),
      param("layers.0.mlp.fc.bias", {64}),
      param("layers.0.moe.experts", {4, 16, 8}),
      param("stem.conv.weight", {8, 3, 3, 3}),
      param("layers.0.gate_scale", {16}),
      param("layers.0.temperature", {}),
      param("transformer.ln_f.weight", {16}),
      param("lm_head.weight", {50, 16}),
      param("head.weight", {10, 16}),
      param("output.weight", {50, 16}),
  };
  const auto groups = default_groups();
  const auto assignment = route_parameters(params, groups, default_routing_rules());
  ASSERT_EQ(assignment.size(), params.size());
  const std::map<std::string, std::string> expected = {
      {"transformer.wte.weight", "adamw/embeddings_and_head"},
      {"transformer.wpe.weight", "adamw/embeddings_and_head"},
      {"model.embed_tokens.weight", "adamw/embeddings_and_head"},
      {"transformer.h.0.ln_1.weight", "adamw/norms"},
      {"transformer.h.0.ln_1.bias", "adamw/norms"},  // norms come before biases
      {"transformer.h.0.attn.c_attn.weight", "muon/matrices"},
      {"transformer.h.0.attn.c_attn.bias", "adamw/biases"},
      {"layers.0.attn.q_norm.weight", "adamw/norms"},
      {"layers.0.mlp.fc.weight", "muon/matrices"},
      {"layers.0.mlp.fc.bias", "adamw/biases"},
      {"layers.0.moe.experts", "muon/matrices"},  // 3-D
      {"stem.conv.weight", "muon/matrices"},      // 4-D
      {"layers.0.gate_scale", "adamw/vectors"},   // 1-D
      {"layers.0.temperature", "adamw/vectors"},  // 0-D
      {"transformer.ln_f.weight", "adamw/norms"},
      {"lm_head.weight", "adamw/embeddings_and_head"},
      {"head.weight", "adamw/embeddings_and_head"},
      {"output.weight", "adamw/embeddings_and_head"},
  };
  EXPECT_EQ(routed(assignment, groups), expected);
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(assignment[i].param, params[i].name);
    EXPECT_EQ(assignment[i].shape, params[i].shape);
  }
}

TEST(DefaultRouting, DefaultRulesMayClaimNothing) {
  // No embeddings, norms, biases or vectors: the built-in rules are not must_match.
  const auto groups = default_groups();
  const auto rules = default_routing_rules();
  for (const auto& r : rules) EXPECT_FALSE(r.must_match) << r.name;
  const auto assignment = route_parameters({param("fc.weight", {4, 4})}, groups, rules);
  ASSERT_EQ(assignment.size(), 1u);
  EXPECT_EQ(groups[assignment[0].group_index].name, "muon");
}

TEST(DefaultRouting, DefaultGroups) {
  const auto groups = default_groups();
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].name, "muon");
  EXPECT_EQ(groups[0].algorithm, Algorithm::kMuon);
  EXPECT_EQ(groups[1].name, "adamw");
  EXPECT_EQ(groups[1].algorithm, Algorithm::kAdamW);
}

TEST(DefaultRouting, AlgorithmNames) {
  EXPECT_EQ(to_string(Algorithm::kMuon), "muon");
  EXPECT_EQ(to_string(Algorithm::kAdamW), "adamw");
  EXPECT_EQ(parse_algorithm("muon"), Algorithm::kMuon);
  EXPECT_EQ(parse_algorithm("adamw"), Algorithm::kAdamW);
  const std::string msg = thrown_message<InvalidArgument>([] { parse_algorithm("sgd"); });
  EXPECT_TRUE(contains(msg, "'sgd'")) << msg;
  EXPECT_TRUE(contains(msg, "muon adamw")) << msg;
}

// ---------------------------------------------------------------------------------------------
// First match wins

TEST(Routing, FirstMatchWins) {
  const std::vector<ParamGroup> groups = {group("first", Algorithm::kAdamW), group("second", Algorithm::kAdamW)};
  const std::vector<ParamShape> params = {param("layers.0.weight", {4, 4}), param("layers.0.extra", {4})};
  // Both rules match layers.0.weight; the earlier one takes it. The second still claims layers.0.extra.
  const std::vector<RoutingRule> rules = {rule("weights", {"*.weight"}, "first"),
                                          rule("layers", {"layers.*"}, "second")};
  const auto assignment = route_parameters(params, groups, rules);
  EXPECT_EQ(routed(assignment, groups), (std::map<std::string, std::string>{{"layers.0.weight", "first/weights"},
                                                                            {"layers.0.extra", "second/layers"}}));

  // Swapping the rule order swaps the winner.
  const std::vector<RoutingRule> swapped = {rule("layers", {"layers.*"}, "second"),
                                            rule("weights", {"*.weight"}, "first")};
  const std::vector<RoutingRule> swapped_lenient = [&] {
    auto r = swapped;
    r[1].must_match = false;  // everything is claimed by "layers" now
    return r;
  }();
  const auto assignment2 = route_parameters(params, groups, swapped_lenient);
  EXPECT_EQ(routed(assignment2, groups), (std::map<std::string, std::string>{{"layers.0.weight", "second/layers"},
                                                                             {"layers.0.extra", "second/layers"}}));
}

// ---------------------------------------------------------------------------------------------
// RoutingError

TEST(RoutingErrors, MustMatchRuleMatchingNothing) {
  const std::vector<ParamGroup> groups = {group("adam", Algorithm::kAdamW)};
  const std::vector<RoutingRule> rules = {rule("experts", {"*experts*"}, "adam"), rule("rest", {}, "adam")};
  const std::string msg = thrown_message<RoutingError>([&] {
    route_parameters({param("fc.weight", {4, 4}), param("fc.bias", {4})}, groups, rules);
  });
  EXPECT_TRUE(contains(msg, "routing rule 'experts'")) << msg;
  EXPECT_TRUE(contains(msg, "test.yaml:experts")) << msg;  // its origin
  EXPECT_TRUE(contains(msg, "claims no parameter")) << msg;
  EXPECT_FALSE(contains(msg, "'rest'")) << msg;

  // The same rule with must_match off is allowed to claim nothing.
  auto lenient = rules;
  lenient[0].must_match = false;
  EXPECT_EQ(route_parameters({param("fc.weight", {4, 4})}, groups, lenient).size(), 1u);
}

TEST(RoutingErrors, RuleShadowedByAnEarlierRule) {
  const std::vector<ParamGroup> groups = {group("adam", Algorithm::kAdamW), group("muon", Algorithm::kMuon)};
  // "matrices" matches fc.weight, but "everything" has already claimed it.
  const std::vector<RoutingRule> rules = {rule("everything", {"*"}, "adam"), rule("matrices", {}, "muon", 2)};
  const std::string msg = thrown_message<RoutingError>([&] {
    route_parameters({param("fc.weight", {4, 4}), param("fc.bias", {4})}, groups, rules);
  });
  EXPECT_TRUE(contains(msg, "routing rule 'matrices'")) << msg;
  EXPECT_TRUE(contains(msg, "claimed by an earlier rule")) << msg;
}

TEST(RoutingErrors, UnclaimedParameter) {
  const std::vector<ParamGroup> groups = {group("muon", Algorithm::kMuon)};
  const std::vector<RoutingRule> rules = {rule("weights", {"*.weight"}, "muon")};
  const std::string msg = thrown_message<RoutingError>([&] {
    route_parameters({param("fc.weight", {4, 4}), param("fc.bias", {4})}, groups, rules);
  });
  EXPECT_TRUE(contains(msg, "no routing rule claims parameter 'fc.bias'")) << msg;
  EXPECT_TRUE(contains(msg, "[4]")) << msg;  // its shape
  EXPECT_FALSE(contains(msg, "'fc.weight'")) << msg;
}

TEST(RoutingErrors, DuplicateParameterName) {
  const std::string msg = thrown_message<RoutingError>([] {
    route_parameters({param("fc.weight", {4, 4}), param("fc.bias", {4}), param("fc.weight", {4, 4})}, default_groups(),
                     default_routing_rules());
  });
  EXPECT_TRUE(contains(msg, "parameter name 'fc.weight' appears twice")) << msg;
}

TEST(RoutingErrors, RuleNamingUnknownGroup) {
  const std::vector<RoutingRule> rules = {rule("vectors", {}, "adamw", 0, 1), rule("matrices", {}, "hidden", 2)};
  const std::string msg = thrown_message<RoutingError>([&] {
    route_parameters({param("fc.weight", {4, 4}), param("fc.bias", {4})}, default_groups(), rules);
  });
  EXPECT_TRUE(contains(msg, "routing rule 'matrices'")) << msg;
  EXPECT_TRUE(contains(msg, "group 'hidden'")) << msg;
  EXPECT_TRUE(contains(msg, "defined groups: muon adamw")) << msg;
}

TEST(RoutingErrors, VectorRoutedToMuonGroup) {
  const std::vector<ParamGroup> groups = {group("hidden", Algorithm::kMuon)};
  const std::vector<RoutingRule> rules = {rule("all", {}, "hidden")};
  const std::string msg = thrown_message<RoutingError>([&] {
    route_parameters({param("fc.weight", {4, 4}), param("norm.weight", {4})}, groups, rules);
  });
  EXPECT_TRUE(contains(msg, "routing rule 'all'")) << msg;
  EXPECT_TRUE(contains(msg, "1-D parameter 'norm.weight'")) << msg;
  EXPECT_TRUE(contains(msg, "Muon group 'hidden'")) << msg;

  const std::string msg0 = thrown_message<RoutingError>([&] { route_parameters({param("scale", {})}, groups, rules); });
  EXPECT_TRUE(contains(msg0, "0-D parameter 'scale'")) << msg0;
}

// ---------------------------------------------------------------------------------------------
// Rank filters and glob lists

TEST(RuleMatching, MinAndMaxDim) {
  const RoutingRule r = rule("mid", {}, "g", 2, 3);
  EXPECT_FALSE(r.matches("x", 0));
  EXPECT_FALSE(r.matches("x", 1));
  EXPECT_TRUE(r.matches("x", 2));
  EXPECT_TRUE(r.matches("x", 3));
  EXPECT_FALSE(r.matches("x", 4));
  const RoutingRule any = rule("any", {}, "g");
  EXPECT_TRUE(any.matches("anything at all", 0));
  EXPECT_TRUE(any.matches("anything at all", 7));
}

TEST(RuleMatching, GlobPatternLists) {
  const RoutingRule r = rule("globs", {"layers.[0-1].*", "*.bias", "head.weight"}, "g");
  EXPECT_TRUE(r.matches("layers.0.attn.weight", 2));  // '*' crosses dots
  EXPECT_TRUE(r.matches("layers.1.mlp.fc.weight", 2));
  EXPECT_FALSE(r.matches("layers.2.mlp.fc.weight", 2));  // bracket range
  EXPECT_TRUE(r.matches("layers.7.mlp.fc.bias", 1));
  EXPECT_TRUE(r.matches("head.weight", 2));
  EXPECT_FALSE(r.matches("lm_head.weight", 2));  // globs are anchored at both ends
  EXPECT_FALSE(r.matches("head.weight.extra", 2));
  const RoutingRule q = rule("single_char", {"layers.?.norm"}, "g");
  EXPECT_TRUE(q.matches("layers.3.norm", 1));
  EXPECT_FALSE(q.matches("layers.12.norm", 1));
  // A pattern match does not override the rank filter.
  const RoutingRule both = rule("both", {"*experts*"}, "g", 3, 3);
  EXPECT_TRUE(both.matches("moe.experts", 3));
  EXPECT_FALSE(both.matches("moe.experts", 2));
  EXPECT_FALSE(both.matches("moe.router", 3));
}

TEST(RuleMatching, RankFiltersRouteByDimension) {
  const std::vector<ParamGroup> groups = {group("stacks", Algorithm::kMuon), group("mats", Algorithm::kMuon),
                                          group("vecs", Algorithm::kAdamW)};
  const std::vector<RoutingRule> rules = {rule("stacks", {}, "stacks", 3), rule("mats", {}, "mats", 2, 2),
                                          rule("vecs", {}, "vecs", 0, 1)};
  const std::vector<ParamShape> params = {param("a", {2, 3, 4}), param("b", {3, 4}), param("c", {4}), param("d", {}),
                                          param("e", {2, 2, 2, 2})};
  const auto assignment = route_parameters(params, groups, rules);
  EXPECT_EQ(
      routed(assignment, groups),
      (std::map<std::string, std::string>{
          {"a", "stacks/stacks"}, {"b", "mats/mats"}, {"c", "vecs/vecs"}, {"d", "vecs/vecs"}, {"e", "stacks/stacks"}}));
}

TEST(RuleMatching, GlobListsRouteByName) {
  const std::vector<ParamGroup> groups = {group("embed", Algorithm::kAdamW), group("muon", Algorithm::kMuon),
                                          group("adamw", Algorithm::kAdamW)};
  const std::vector<RoutingRule> rules = {rule("embed_head", {"embed.weight", "head.weight"}, "embed"),
                                          rule("norms_biases", {"*norm*", "*bias"}, "adamw"),
                                          rule("matrices", {}, "muon", 2)};
  const std::vector<ParamShape> params = {param("embed.weight", {10, 8}),
                                          param("layers.0.attn.qkv.weight", {24, 8}),
                                          param("layers.0.mlp.fc.weight", {16, 8}),
                                          param("layers.0.norm.weight", {8}),
                                          param("head.weight", {10, 8}),
                                          param("layers.0.mlp.fc.bias", {16})};
  const auto assignment = route_parameters(params, groups, rules);
  EXPECT_EQ(routed(assignment, groups),
            (std::map<std::string, std::string>{{"embed.weight", "embed/embed_head"},
                                                {"layers.0.attn.qkv.weight", "muon/matrices"},
                                                {"layers.0.mlp.fc.weight", "muon/matrices"},
                                                {"layers.0.norm.weight", "adamw/norms_biases"},
                                                {"head.weight", "embed/embed_head"},
                                                {"layers.0.mlp.fc.bias", "adamw/norms_biases"}}));
}

// ---------------------------------------------------------------------------------------------
// The assignment table

TEST(FormatAssignment, ListsEveryParameterWithItsGroup) {
  const std::vector<ParamGroup> groups = {group("hidden", Algorithm::kMuon), group("adam_vectors", Algorithm::kAdamW)};
  const std::vector<RoutingRule> rules = {rule("matrices", {}, "hidden", 2), rule("vectors", {}, "adam_vectors", 0, 1)};
  const std::vector<ParamShape> params = {param("layers.0.attn.qkv.weight", {24, 8}),
                                          param("layers.0.norm.weight", {8}), param("layers.0.mlp.fc.weight", {16, 8})};
  const auto assignment = route_parameters(params, groups, rules);
  const std::string table = format_assignment(assignment, groups);
  EXPECT_TRUE(contains(table, "parameter")) << table;
  std::vector<std::string> lines;
  std::string line;
  for (std::istringstream in(table); std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), params.size() + 1) << table;  // header + one line per parameter
  const std::vector<std::vector<std::string>> expected = {
      {"layers.0.attn.qkv.weight", "[24, 8]", "hidden", "muon", "matrices"},
      {"layers.0.norm.weight", "[8]", "adam_vectors", "adamw", "vectors"},
      {"layers.0.mlp.fc.weight", "[16, 8]", "hidden", "muon", "matrices"}};
  for (size_t i = 0; i < expected.size(); ++i) {
    for (const auto& field : expected[i]) {
      EXPECT_TRUE(contains(lines[i + 1], field)) << "line " << i + 1 << " lacks '" << field << "': " << lines[i + 1];
    }
  }
}

TEST(FormatAssignment, ContainerTableMatches) {
  NamedParameters params = {tensor_param("embed.weight", {10, 8}), tensor_param("layers.0.mlp.fc.weight", {16, 8}),
                            tensor_param("layers.0.mlp.fc.bias", {16})};
  MuonWithAdamW opt(params);
  const std::string table = opt.assignment_table();
  EXPECT_EQ(table, format_assignment(opt.assignment(), opt.groups()));
  for (const auto& p : params) EXPECT_TRUE(contains(table, p.name)) << table;
  EXPECT_TRUE(contains(table, "embeddings_and_head")) << table;
  EXPECT_TRUE(contains(table, "biases")) << table;
  EXPECT_TRUE(contains(table, "matrices")) << table;
}

// ---------------------------------------------------------------------------------------------
// MuonWithAdamW validates every group's hyperparameters

TEST(MuonWithAdamWGroups, RejectsInvalidMuonHyperparameters) {
  auto groups = default_groups();
  groups[0].name = "hidden";
  groups[0].muon.momentum = 1.0;
  auto rules = default_routing_rules();
  rules.back().group = "hidden";
  const std::string msg = thrown_message<InvalidArgument>([&] {
    MuonWithAdamW opt({tensor_param("fc.weight", {4, 4})}, groups, rules);
  });
  EXPECT_TRUE(contains(msg, "group 'hidden'")) << msg;
  EXPECT_TRUE(contains(msg, "'momentum'")) << msg;
  EXPECT_TRUE(contains(msg, "[0, 1)")) << msg;
}

TEST(MuonWithAdamWGroups, RejectsInvalidAdamWHyperparameters) {
  auto groups = default_groups();
  groups[1].name = "vectors";
  groups[1].adamw.eps = 0.0;
  auto rules = default_routing_rules();
  for (auto& r : rules) {
    if (r.group == "adamw") r.group = "vectors";
  }
  const std::string msg = thrown_message<InvalidArgument>([&] {
    MuonWithAdamW opt({tensor_param("fc.weight", {4, 4}), tensor_param("fc.bias", {4})}, groups, rules);
  });
  EXPECT_TRUE(contains(msg, "group 'vectors'")) << msg;
  EXPECT_TRUE(contains(msg, "'eps'")) << msg;
}

TEST(MuonWithAdamWGroups, RejectsAnInvalidGroupEvenWhenNothingIsRoutedToIt) {
  auto groups = default_groups();
  groups.push_back(group("unused", Algorithm::kMuon));
  groups.back().muon.ns.steps = 0;
  const std::string msg = thrown_message<InvalidArgument>([&] {
    MuonWithAdamW opt({tensor_param("fc.weight", {4, 4})}, groups, default_routing_rules());
  });
  EXPECT_TRUE(contains(msg, "group 'unused'")) << msg;
  EXPECT_TRUE(contains(msg, "ns_steps")) << msg;
}

TEST(MuonWithAdamWGroups, ConstructorSurfacesRoutingErrors) {
  const std::string msg = thrown_message<RoutingError>([] {
    MuonWithAdamW opt({tensor_param("fc.weight", {4, 4}), tensor_param("fc.weight", {4, 4})});
  });
  EXPECT_TRUE(contains(msg, "'fc.weight' appears twice")) << msg;
}

}  // namespace
}  // namespace orthotron
