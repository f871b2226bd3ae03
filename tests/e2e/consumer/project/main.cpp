// main.cpp: a consumer of the installed orthotron package. Routes a 2-D weight to Muon and a 1-D
// bias to AdamW with the default groups and rules, takes one step, and exits 0 only when both
// parameters landed in the expected algorithm and changed.
#include <ATen/ATen.h>

#include <cstdio>
#include <exception>
#include <string>

#include "optim/muon_with_adamw.h"

namespace {

bool check(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok  " : "FAIL", what.c_str());
  return ok;
}

}  // namespace

int main() {
  try {
    at::manual_seed(0);
    at::Tensor weight = at::randn({8, 4});
    at::Tensor bias = at::randn({4});
    const at::Tensor weight_before = weight.clone();
    const at::Tensor bias_before = bias.clone();
    weight.requires_grad_(true);
    bias.requires_grad_(true);
    weight.mutable_grad() = at::randn({8, 4});
    bias.mutable_grad() = at::randn({4});

    orthotron::MuonWithAdamW optimizer({{"layers.0.mlp.weight", weight}, {"layers.0.mlp.bias", bias}});
    std::printf("%s", optimizer.assignment_table().c_str());

    bool ok = true;
    for (const orthotron::Assignment& a : optimizer.assignment()) {
      const orthotron::Algorithm algorithm = optimizer.groups()[a.group_index].algorithm;
      const orthotron::Algorithm expected =
          a.param == "layers.0.mlp.weight" ? orthotron::Algorithm::kMuon : orthotron::Algorithm::kAdamW;
      ok &= check(algorithm == expected, a.param + " routed to " + orthotron::to_string(algorithm) + " (expected " +
                                             orthotron::to_string(expected) + ")");
    }

    optimizer.step();

    const double weight_change = (weight.detach() - weight_before).abs().max().item<double>();
    const double bias_change = (bias.detach() - bias_before).abs().max().item<double>();
    ok &= check(weight_change > 0.0,
                "layers.0.mlp.weight changed by step() (max |delta| = " + std::to_string(weight_change) + ")");
    ok &= check(bias_change > 0.0,
                "layers.0.mlp.bias changed by step() (max |delta| = " + std::to_string(bias_change) + ")");
    std::printf("%s\n", ok ? "orthotron consumer: PASS" : "orthotron consumer: FAIL");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("orthotron consumer: FAIL: %s\n", e.what());
    return 1;
  }
}
