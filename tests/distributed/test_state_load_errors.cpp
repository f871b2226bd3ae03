// test_state_load_errors.cpp: one table of hostile or mismatched state dicts, each loaded into
// both containers (single-process MuonWithAdamW and DistributedMuonWithAdamW) on real ranks
// (CTest runs it at 1 and 2 ranks). Both must refuse every case with a StateDictError whose
// message names what is wrong, and change nothing, so the two loads cannot drift apart again.
// Also the dtype rule both apply: lossless conversions only (convert_losslessly).
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <nlohmann/json.hpp>

#include "base/errors.h"
#include "gpt_fixture.h"
#include "mpi_world.h"
#include "optim/distributed_muon_with_adamw.h"
#include "optim/muon_with_adamw.h"
#include "parallel/mpi_runtime.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::contains;
using orthotron::testing::GptShape;

using orthotron::testing::world;

/// A state dict under mutation, with helpers that find a parameter held in it.
struct Mutable {
  StateDict sd;
  nlohmann::json state() const { return nlohmann::json::parse(sd.metadata.at("orthotron.state")); }
  void set(const nlohmann::json& j) { sd.metadata["orthotron.state"] = j.dump(); }
  /// The first parameter of `section` held here ("" when none).
  std::string first(const std::string& section) const {
    const auto j = state();
    return j[section]["params"].empty() ? "" : j[section]["params"].begin().key();
  }
};

struct Case {
  std::string name;
  std::function<bool(Mutable&)> mutate;  ///< false when it does not apply to what this rank holds
  std::string needle;                    ///< must appear in the error message
};

std::vector<Case> cases() {
  using J = nlohmann::json;
  auto edit = [](std::function<bool(J&, Mutable&)> f) {
    return [f](Mutable& m) {
      J j = m.state();
      const bool applied = f(j, m);
      m.set(j);
      return applied;
    };
  };
  auto muon_entry = [](std::function<void(J&)> f) {
    return [f](J& j, Mutable& m) {
      const std::string p = m.first("muon");
      if (p.empty()) return false;
      f(j["muon"]["params"][p]);
      return true;
    };
  };
  auto tensor = [](const std::string& section, const std::string& slot, std::function<void(at::Tensor&)> f) {
    return [=](Mutable& m) {
      const std::string p = m.first(section);
      if (p.empty()) return false;
      auto it = m.sd.tensors.find(section + "/" + p + "/" + slot);
      if (it == m.sd.tensors.end()) return false;
      it->second = it->second.clone();
      f(it->second);
      return true;
    };
  };
  return {
      {"no format key", [](Mutable& m) { return m.sd.metadata.erase("orthotron.format") == 1; }, "orthotron.format"},
      {"wrong format", [](Mutable& m) { return !(m.sd.metadata["orthotron.format"] = "model_weights").empty(); },
       "'model_weights', expected 'optimizer_state'"},
      {"format version", [](Mutable& m) { return !(m.sd.metadata["orthotron.format_version"] = "99").empty(); },
       "format version 99"},
      {"optimizer kind", [](Mutable& m) { return !(m.sd.metadata["orthotron.optimizer"] = "AdamW").empty(); },
       "optimizer kind 'AdamW'"},
      {"state not JSON", [](Mutable& m) { return !(m.sd.metadata["orthotron.state"] = "{not json").empty(); },
       "invalid JSON"},
      {"state duplicate key",
       [](Mutable& m) { return !(m.sd.metadata["orthotron.state"] = R"({"muon": {}, "muon": {}})").empty(); },
       "duplicate JSON key 'muon'"},
      {"state deeply nested",
       [](Mutable& m) { return !(m.sd.metadata["orthotron.state"] = std::string(5000, '[')).empty(); },
       "nested deeper"},
      {"unknown section", edit([](J& j, Mutable&) { return !(j["sgd"] = J::object()).is_null(); }),
       "unknown section 'sgd'"},
      {"missing muon section", edit([](J& j, Mutable&) { return j.erase("muon") == 1; }), "'muon' section is missing"},
      {"missing adamw section", edit([](J& j, Mutable&) { return j.erase("adamw") == 1; }),
       "'adamw' section is missing"},
      {"section without params", edit([](J& j, Mutable&) { return j["adamw"].erase("params") == 1; }),
       "'adamw' section must be an object with 'groups' and 'params'"},
      {"missing group", edit([](J& j, Mutable&) { return j["muon"]["groups"].erase("muon") == 1; }),
       "group 'muon' is missing"},
      {"unexpected group",
       edit([](J& j, Mutable&) { return !(j["adamw"]["groups"]["extra"] = j["adamw"]["groups"]["adamw"]).is_null(); }),
       "unexpected group 'extra'"},
      {"group under the other algorithm", edit([](J& j, Mutable&) {
         j["adamw"]["groups"]["muon"] = j["muon"]["groups"]["muon"];
         return j["muon"]["groups"].erase("muon") == 1;
       }),
       "group 'muon' is adamw in the state dict but muon here"},
      {"group hyperparameter missing",
       edit([](J& j, Mutable&) { return j["muon"]["groups"]["muon"].erase("momentum"); }), "key 'momentum' is missing"},
      {"group hyperparameter of the wrong type",
       edit([](J& j, Mutable&) { return !(j["muon"]["groups"]["muon"]["lr"] = "fast").is_null(); }),
       "lr must be a number"},
      {"group hyperparameter out of range",
       edit([](J& j, Mutable&) { return !(j["adamw"]["groups"]["adamw"]["lr"] = 1e300).is_null(); }),
       "lr must be in [0, 10]"},
      {"group unknown hyperparameter",
       edit([](J& j, Mutable&) { return !(j["muon"]["groups"]["muon"]["momentun"] = 0.9).is_null(); }),
       "unknown key 'momentun'"},
      {"missing parameter", edit([](J& j, Mutable& m) {
         const std::string p = m.first("muon");
         if (p.empty()) return false;
         m.sd.tensors.erase("muon/" + p + "/momentum");
         return j["muon"]["params"].erase(p) == 1;
       }),
       "is missing from the 'muon' section"},
      {"unexpected parameter",
       edit([](J& j, Mutable&) { return !(j["adamw"]["params"]["ghost.bias"] = J::object()).is_null(); }),
       "unexpected parameter 'ghost.bias'"},
      {"parameter moved from Muon to AdamW", edit([](J& j, Mutable& m) {
         const std::string p = m.first("muon");
         if (p.empty()) return false;
         j["adamw"]["params"][p] = j["muon"]["params"][p];
         j["muon"]["params"].erase(p);
         m.sd.tensors.erase("muon/" + p + "/momentum");
         return true;
       }),
       "was optimized by adamw in the state dict but is routed to muon here"},
      {"parameter in another group", edit(muon_entry([](J& e) { e["group"] = "adamw"; })),
       "was in group 'adamw' in the state dict but is routed to group 'muon'"},
      {"parameter shape", edit(muon_entry([](J& e) {
         e["shape"] = {3, 5};
       })),
       "has shape [3, 5] in the state dict"},
      {"parameter dtype", edit(muon_entry([](J& e) { e["dtype"] = "BF16"; })), "has dtype BF16 in the state dict"},
      {"parameter entry not an object", edit(muon_entry([](J& e) { e = 7; })), "entry must be an object"},
      {"parameter entry without shape", edit(muon_entry([](J& e) { e.erase("shape"); })), "entry has no 'shape'"},
      {"parameter entry unknown field", edit(muon_entry([](J& e) { e["momentum"] = 1; })),
       "entry has unknown field 'momentum'"},
      {"parameter shape of the wrong type", edit(muon_entry([](J& e) { e["shape"] = "big"; })),
       "shape must be a list of integers"},
      {"negative step", edit(muon_entry([](J& e) { e["step"] = -3; })), "has step -3"},
      {"absurd step", edit(muon_entry([](J& e) { e["step"] = 1e18; })), "expected an integer"},
      {"huge integer step", edit(muon_entry([](J& e) { e["step"] = std::numeric_limits<int64_t>::max(); })),
       "expected an integer in [0, "},
      {"step zero with tensors", edit(muon_entry([](J& e) { e["step"] = 0; })), "has step 0 but holds state tensors"},
      {"stepped parameter without tensors",
       [](Mutable& m) {
         const std::string p = m.first("muon");
         return !p.empty() && m.sd.tensors.erase("muon/" + p + "/momentum") == 1;
       },
       "state tensors are missing"},
      {"partial AdamW tensors",
       [](Mutable& m) {
         const std::string p = m.first("adamw");
         return !p.empty() && m.sd.tensors.erase("adamw/" + p + "/exp_avg_sq") == 1;
       },
       "has only 1 of its 2 state tensors"},
      {"tensor shape", tensor("muon", "momentum", [](at::Tensor& t) { t = at::zeros({t.numel() + 1}); }),
       "momentum' is Float["},
      {"tensor dtype unlike its entry", tensor("muon", "momentum", [](at::Tensor& t) { t = t.to(at::kDouble); }),
       "has dtype F32 in the state dict but its tensor"},
      {"lossy dtype",
       [](Mutable& m) {  // a consistent F64 state whose first value Float cannot hold
         const std::string p = m.first("muon");
         auto it = m.sd.tensors.find("muon/" + p + "/momentum");
         if (p.empty() || it == m.sd.tensors.end()) return false;
         it->second = it->second.to(at::kDouble);
         it->second.view(-1)[0] = 0.1;
         auto j = m.state();
         j["muon"]["params"][p]["dtype"] = "F64";
         m.set(j);
         return true;
       },
       "Double, the live state is Float: converting would lose bits (1 of"},
      {"unexpected tensor",
       [](Mutable& m) { return m.sd.tensors.emplace("muon/ghost/momentum", at::zeros({2})).second; },
       "unexpected tensor 'muon/ghost/momentum'"},
      {"NaN momentum",
       tensor("muon", "momentum", [](at::Tensor& t) { t.view(-1)[1] = std::numeric_limits<float>::quiet_NaN(); }),
       "non-finite value(s), the first at flat index 1"},
      {"Inf exp_avg",
       tensor("adamw", "exp_avg", [](at::Tensor& t) { t.view(-1)[0] = std::numeric_limits<float>::infinity(); }),
       "non-finite value(s)"},
      {"negative exp_avg_sq", tensor("adamw", "exp_avg_sq", [](at::Tensor& t) { t.view(-1)[0] = -1.0f; }),
       "non-finite or negative value(s)"},
  };
}

struct Model {
  GptShape shape;
  SplitRegistry splits = orthotron::testing::gpt_splits(GptShape{});
  NamedParameters params = orthotron::testing::gpt_params(GptShape{}, 41);
  void set_grads(int seed) {
    at::manual_seed(static_cast<uint64_t>(seed));
    for (auto& p : params) p.tensor.mutable_grad() = at::randn(p.tensor.sizes()) * 0.1;
  }
};

/// Runs every case against an optimizer made by `make` (twice: a stepped source and a fresh
/// target). Returns the number of cases run.
template <typename Make>
int run_table(Make make, bool distributed) {
  Model m;
  auto source = make(m);
  m.set_grads(1);
  source->step();
  const StateDict clean = source->state_dict();
  int ran = 0;
  for (const Case& c : cases()) {
    Mutable mut{clean};
    const bool applied = c.mutate(mut);
    Model fresh_model;
    auto fresh = make(fresh_model);
    const std::string before = fresh->state_dict().metadata.at("orthotron.state");
    std::string message;
    try {
      fresh->load_state_dict(mut.sd);
    } catch (const StateDictError& e) {
      message = e.what();
    }
    if (applied) {
      EXPECT_TRUE(contains(message, c.needle)) << "case '" << c.name << "' on rank " << world().rank() << ": expected '"
                                               << c.needle << "' in '" << message << "'";
    } else if (distributed) {
      EXPECT_TRUE(contains(message, "another data-parallel rank")) << c.name << ": " << message;
    }
    EXPECT_EQ(fresh->state_dict().metadata.at("orthotron.state"), before) << "case '" << c.name << "' changed state";
    EXPECT_TRUE(fresh->state_dict().tensors.empty()) << "case '" << c.name << "' restored tensors";
    ++ran;
  }
  // The clean state loads into both.
  Model again;
  auto target = make(again);
  EXPECT_TRUE(target->load_state_dict(clean).complete());
  return ran;
}

TEST(StateLoadErrors, SingleProcessRefusesEveryCase) {
  const int n = run_table(
      [](Model& m) {
        return std::make_unique<MuonWithAdamW>(m.params, default_groups(), default_routing_rules(), m.splits);
      },
      false);
  EXPECT_EQ(n, static_cast<int>(cases().size()));
  std::printf("single-process container: %d load-error cases refused\n", n);
}

TEST(StateLoadErrors, DistributedRefusesEveryCase) {
  const int n = run_table(
      [](Model& m) {
        return std::make_unique<DistributedMuonWithAdamW>(m.params, world(), default_groups(), default_routing_rules(),
                                                          m.splits);
      },
      true);
  EXPECT_EQ(n, static_cast<int>(cases().size()));
  if (world().rank() == 0) std::printf("distributed container: %d load-error cases refused\n", n);
}

TEST(StateLoadErrors, EachContainerRefusesTheOthersState) {
  Model a, b;
  MuonWithAdamW single(a.params, default_groups(), default_routing_rules(), a.splits);
  DistributedMuonWithAdamW dist(b.params, world(), default_groups(), default_routing_rules(), b.splits);
  const std::string to_dist =
      orthotron::testing::thrown_message<StateDictError>([&] { dist.load_state_dict(single.state_dict()); });
  EXPECT_TRUE(contains(to_dist, "no 'orthotron.layout' record")) << to_dist;
  const std::string to_single =
      orthotron::testing::thrown_message<StateDictError>([&] { single.load_state_dict(dist.state_dict()); });
  EXPECT_TRUE(contains(to_single, "loads only into DistributedMuonWithAdamW")) << to_single;
}

/// The dtype rule in both containers: a BFloat16 state loads into a Float optimizer (widening,
/// reported per tensor, values exact); that Float state, every value BFloat16-representable, loads
/// back into a BFloat16 optimizer bitwise; a Float state after a Float step does not (named).
template <typename Make>
void check_lossless_dtype_rule(Make make) {
  Model bf_model;
  for (auto& p : bf_model.params) p.tensor = p.tensor.detach().to(at::kBFloat16).requires_grad_(true);
  auto bf = make(bf_model);
  at::manual_seed(5);
  for (auto& p : bf_model.params) p.tensor.mutable_grad() = (at::randn(p.tensor.sizes()) * 0.1).to(at::kBFloat16);
  bf->step();
  const StateDict bf_state = bf->state_dict();

  Model f_model;
  auto f = make(f_model);
  const LoadReport widened = f->load_state_dict(bf_state);
  EXPECT_TRUE(widened.complete()) << widened.to_string();
  size_t held = 0;
  for (const auto& [key, t] : bf_state.tensors) held += t.scalar_type() == at::kBFloat16 ? 1 : 0;
  EXPECT_GT(held, 0u);
  EXPECT_EQ(widened.converted.size(), held) << widened.to_string();
  const StateDict f_state = f->state_dict();
  for (const auto& [key, t] : bf_state.tensors) {
    if (t.scalar_type() != at::kBFloat16) continue;
    ASSERT_TRUE(f_state.tensors.count(key)) << key;
    EXPECT_EQ(f_state.tensors.at(key).scalar_type(), at::kFloat) << key;
    EXPECT_TRUE(at::equal(f_state.tensors.at(key), t.to(at::kFloat))) << key;
  }

  Model bf_again_model;
  for (auto& p : bf_again_model.params) p.tensor = p.tensor.detach().to(at::kBFloat16).requires_grad_(true);
  auto bf_again = make(bf_again_model);
  EXPECT_EQ(bf_again->load_state_dict(f_state).converted.size(), held);
  for (const auto& [key, t] : bf_again->state_dict().tensors) {
    if (bf_state.tensors.count(key)) {
      EXPECT_TRUE(at::equal(t, bf_state.tensors.at(key))) << key;
    }
  }

  Model stepped_model;
  auto stepped = make(stepped_model);
  stepped_model.set_grads(1);
  stepped->step();
  Model bf_target_model;
  for (auto& p : bf_target_model.params) p.tensor = p.tensor.detach().to(at::kBFloat16).requires_grad_(true);
  auto bf_target = make(bf_target_model);
  std::string msg;
  try {
    bf_target->load_state_dict(stepped->state_dict());
  } catch (const StateDictError& e) {
    msg = e.what();
  }
  const bool holds_state = !stepped->state_dict().tensors.empty();
  if (holds_state) {
    EXPECT_TRUE(contains(msg, "is Float, the live state is BFloat16: converting would lose bits")) << msg;
  } else {
    EXPECT_TRUE(contains(msg, "another data-parallel rank")) << msg;
  }
  EXPECT_TRUE(bf_target->state_dict().tensors.empty()) << "a refused load changed the state";
}

TEST(StateLoadDtypes, SingleProcessConvertsOnlyLosslessly) {
  check_lossless_dtype_rule([](Model& m) {
    return std::make_unique<MuonWithAdamW>(m.params, default_groups(), default_routing_rules(), m.splits);
  });
}

TEST(StateLoadDtypes, DistributedConvertsOnlyLosslessly) {
  check_lossless_dtype_rule([](Model& m) {
    return std::make_unique<DistributedMuonWithAdamW>(m.params, world(), default_groups(), default_routing_rules(),
                                                      m.splits);
  });
}

TEST(StateLoadErrors, LayoutFieldsOfTheWrongTypeAreNamed) {
  Model m;
  DistributedMuonWithAdamW dist(m.params, world(), default_groups(), default_routing_rules(), m.splits);
  StateDict sd = dist.state_dict();
  auto layout = nlohmann::json::parse(sd.metadata.at("orthotron.layout"));
  layout["world_size"] = "two";
  sd.metadata["orthotron.layout"] = layout.dump();
  const std::string msg = orthotron::testing::thrown_message<StateDictError>([&] { dist.load_state_dict(sd); });
  EXPECT_TRUE(contains(msg, "layout record field 'world_size' is missing or not an integer")) << msg;
}

}  // namespace
}  // namespace orthotron
