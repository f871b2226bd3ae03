// param_routing.cpp: first-match routing of named parameters to optimizer groups.
#include "optim/param_routing.h"

#include <fnmatch.h>

#include <algorithm>
#include <iomanip>
#include <set>
#include <sstream>

#include "base/errors.h"

namespace orthotron {

bool RoutingRule::matches(const std::string& param_name, int64_t dim) const {
  if (dim < min_dim || dim > max_dim) return false;
  if (patterns.empty()) return true;
  for (const auto& p : patterns) {
    if (::fnmatch(p.c_str(), param_name.c_str(), 0) == 0) return true;
  }
  return false;
}

std::vector<ParamGroup> default_groups() {
  ParamGroup muon;
  muon.name = "muon";
  muon.algorithm = Algorithm::kMuon;
  ParamGroup adamw;
  adamw.name = "adamw";
  adamw.algorithm = Algorithm::kAdamW;
  return {muon, adamw};
}

std::vector<RoutingRule> default_routing_rules() {
  auto rule = [](std::string name, std::vector<std::string> patterns, int min_dim, int max_dim, std::string group) {
    RoutingRule r;
    r.name = std::move(name);
    r.patterns = std::move(patterns);
    r.min_dim = min_dim;
    r.max_dim = max_dim;
    r.group = std::move(group);
    r.must_match = false;
    r.origin = "built-in default";
    return r;
  };
  return {
      rule("embeddings_and_head",
           {"*embed*", "*wte*", "*wpe*", "*lm_head*", "*output_layer*", "output.weight", "*.output.weight",
            "head.weight", "*.head.weight"},
           0, INT_MAX, "adamw"),
      rule("norms", {"*norm*", "*ln_*", "ln*"}, 0, INT_MAX, "adamw"),
      rule("biases", {"*bias"}, 0, INT_MAX, "adamw"),
      rule("vectors", {}, 0, 1, "adamw"),
      rule("matrices", {}, 2, INT_MAX, "muon"),
  };
}

std::vector<ParamShape> logical_shapes(const NamedParameters& params) {
  std::vector<ParamShape> out;
  out.reserve(params.size());
  for (const auto& p : params) out.push_back({p.name, p.tensor.sizes().vec()});
  return out;
}

std::vector<Assignment> route_parameters(const std::vector<ParamShape>& params, const std::vector<ParamGroup>& groups,
                                         const std::vector<RoutingRule>& rules) {
  std::vector<size_t> rule_group(rules.size());
  for (size_t r = 0; r < rules.size(); ++r) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const ParamGroup& g) { return g.name == rules[r].group; });
    if (it == groups.end()) {
      std::string known;
      for (const auto& g : groups) known += " " + g.name;
      throw RoutingError("routing rule '" + rules[r].name + "' (" + rules[r].origin + ") names group '" +
                         rules[r].group + "', which is not defined; defined groups:" + known);
    }
    rule_group[r] = static_cast<size_t>(it - groups.begin());
  }
  std::set<std::string> seen;
  std::vector<size_t> claimed(rules.size(), 0);
  std::vector<Assignment> out;
  for (const auto& p : params) {
    if (!seen.insert(p.name).second) throw RoutingError("parameter name '" + p.name + "' appears twice");
    size_t r = 0;
    const int64_t dim = static_cast<int64_t>(p.shape.size());
    while (r < rules.size() && !rules[r].matches(p.name, dim)) ++r;
    if (r == rules.size()) {
      throw RoutingError("no routing rule claims parameter '" + p.name + "' (shape " +
                         c10::str(c10::IntArrayRef(p.shape)) + "); add a rule for it or a catch-all rule at the end");
    }
    const ParamGroup& g = groups[rule_group[r]];
    if (g.algorithm == Algorithm::kMuon && dim < 2) {
      throw RoutingError("routing rule '" + rules[r].name + "' sends " + std::to_string(dim) + "-D parameter '" +
                         p.name + "' to Muon group '" + g.name +
                         "'; Muon needs >= 2-D weights (add max_dim or route it to an AdamW group)");
    }
    ++claimed[r];
    out.push_back({p.name, p.shape, rule_group[r], rules[r].name});
  }
  for (size_t r = 0; r < rules.size(); ++r) {
    if (rules[r].must_match && claimed[r] == 0) {
      throw RoutingError("routing rule '" + rules[r].name + "' (" + rules[r].origin +
                         ") claims no parameter: it matches nothing, or every parameter it matches is claimed by an "
                         "earlier rule");
    }
  }
  // Fail closed: a Muon group that ends up with no matrix would silently train everything with
  // AdamW (a bug published Muon integrations shipped). Route its rules, or drop the group.
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    if (groups[gi].algorithm != Algorithm::kMuon) continue;
    const bool used = std::any_of(out.begin(), out.end(), [&](const Assignment& a) { return a.group_index == gi; });
    if (!used) {
      throw RoutingError("Muon group '" + groups[gi].name +
                         "' claims no parameter: no rule routes a >= 2-D weight to it, so Muon would never run. "
                         "Check the rules' patterns against the parameter names, or remove the group");
    }
  }
  return out;
}

void check_logical_shape(const Assignment& a, const at::Tensor& tensor) {
  if (tensor.sizes().equals(a.shape)) return;
  throw ShapeError("parameter '" + a.param + "' has shape " + c10::str(tensor.sizes()) +
                   ", but the optimizer was built for its logical shape " + c10::str(c10::IntArrayRef(a.shape)) +
                   "; a parameter may not be replaced by a shard, a flattened or a reshaped view after construction");
}

void validate_groups(const std::vector<ParamGroup>& groups) {
  for (const auto& g : groups) {
    try {
      if (g.algorithm == Algorithm::kMuon) {
        g.muon.validate();
      } else {
        g.adamw.validate();
      }
    } catch (const InvalidArgument& e) {
      throw InvalidArgument("group '" + g.name + "': " + e.what());
    }
  }
}

std::string format_assignment(const std::vector<Assignment>& assignment, const std::vector<ParamGroup>& groups) {
  size_t width = 9;
  for (const auto& a : assignment) width = std::max(width, a.param.size());
  std::ostringstream out;
  out << std::left << std::setw(static_cast<int>(width) + 2) << "parameter" << std::setw(20) << "shape" << std::setw(14)
      << "group" << std::setw(10) << "algorithm"
      << "rule\n";
  for (const auto& a : assignment) {
    const auto& g = groups[a.group_index];
    out << std::setw(static_cast<int>(width) + 2) << a.param << std::setw(20) << c10::str(c10::IntArrayRef(a.shape))
        << std::setw(14) << g.name << std::setw(10) << to_string(g.algorithm) << a.rule << "\n";
  }
  return out.str();
}

}  // namespace orthotron
