// ns_audit.cpp: predicted Newton-Schulz work per group and its comparison with what ran.
#include "optim/ns_audit.h"

#include <set>
#include <utility>

#include "base/errors.h"

namespace orthotron {

NsCounts expected_ns_counts(const std::vector<PlanParam>& params, const std::vector<size_t>& stepped) {
  NsCounts out;
  std::map<size_t, std::set<std::pair<int64_t, int64_t>>> shapes;
  for (size_t i : stepped) {
    const PlanParam& p = params.at(i);
    if (p.algorithm != Algorithm::kMuon) continue;
    for (const auto& m : p.matrices) {
      out[p.group].matrices += m.count;
      shapes[p.group].insert({m.m, m.n});
    }
  }
  for (const auto& [group, distinct] : shapes) out[group].calls = static_cast<int64_t>(distinct.size());
  return out;
}

void check_ns_counts(const NsCounts& expected, const NsCounts& actual, const std::vector<ParamGroup>& groups,
                     const std::string& where) {
  std::set<size_t> keys;
  for (const auto& kv : expected) keys.insert(kv.first);
  for (const auto& kv : actual) keys.insert(kv.first);
  for (size_t g : keys) {
    const NsGroupCount want = expected.count(g) ? expected.at(g) : NsGroupCount{};
    const NsGroupCount got = actual.count(g) ? actual.at(g) : NsGroupCount{};
    if (want == got) continue;
    const std::string name = g < groups.size() ? groups[g].name : "#" + std::to_string(g);
    throw InvariantError(where + ": Newton-Schulz audit failed for group '" + name + "': the plan says " +
                         std::to_string(want.matrices) + " matrices in " + std::to_string(want.calls) +
                         " batched calls this step, but " + std::to_string(got.matrices) + " matrices in " +
                         std::to_string(got.calls) + " calls ran");
  }
}

}  // namespace orthotron
