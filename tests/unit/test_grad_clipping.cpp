// test_grad_clipping.cpp: global gradient-norm clipping inside MuonWithAdamW::step (the norm over
// every gradient, the scaling above max_norm, no scaling at 0) and the non-finite skip (nothing
// moves: parameters, state, step counts).
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cmath>

#include "base/errors.h"
#include "gpt_fixture.h"
#include "optim/muon_with_adamw.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::clone_params;
using orthotron::testing::GptShape;

void set_grads(NamedParameters& params, uint64_t seed, double scale) {
  at::manual_seed(seed);
  for (auto& p : params) p.tensor.mutable_grad() = at::randn(p.tensor.sizes()) * scale;
}

double independent_norm(const NamedParameters& params) {
  double sum = 0;
  for (const auto& p : params) sum += p.tensor.grad().to(at::kDouble).pow(2).sum().item<double>();
  return std::sqrt(sum);
}

TEST(GradClipping, TheNormCoversEveryGradientAndScalesAboveTheLimit) {
  const GptShape s;
  const NamedParameters init = orthotron::testing::gpt_params(s, 3);
  NamedParameters clipped = clone_params(init), manual = clone_params(init);
  MuonWithAdamW a(clipped, default_groups(), default_routing_rules(), orthotron::testing::gpt_splits(s));
  MuonWithAdamW b(manual, default_groups(), default_routing_rules(), orthotron::testing::gpt_splits(s));
  a.set_max_grad_norm(1.0);
  for (int step = 0; step < 3; ++step) {
    set_grads(clipped, 100 + step, 0.5);
    set_grads(manual, 100 + step, 0.5);
    const double norm = independent_norm(manual);
    ASSERT_GT(norm, 1.0) << "the test needs gradients above the limit";
    for (auto& p : manual) p.tensor.mutable_grad().mul_(1.0 / (norm + 1e-6));
    a.step();
    b.step();  // no clipping on b: its gradients were scaled by hand
    EXPECT_NEAR(a.last_grad_norm(), norm, 1e-5 * norm);
    EXPECT_NEAR(b.last_grad_norm(), 1.0, 1e-5);
    EXPECT_FALSE(a.last_step_skipped());
  }
  for (size_t i = 0; i < init.size(); ++i) {
    EXPECT_LE(orthotron::testing::max_abs_diff(clipped[i].tensor, manual[i].tensor), 1e-5) << init[i].name;
  }
}

TEST(GradClipping, ZeroTurnsScalingOffButTheNormIsStillReported) {
  const GptShape s;
  NamedParameters params = orthotron::testing::gpt_params(s, 4);
  MuonWithAdamW opt(params, default_groups(), default_routing_rules(), orthotron::testing::gpt_splits(s));
  set_grads(params, 7, 3.0);
  const double norm = independent_norm(params);
  const at::Tensor before = params[0].tensor.grad().clone();
  opt.step();
  EXPECT_NEAR(opt.last_grad_norm(), norm, 1e-5 * norm);
  EXPECT_TRUE(at::equal(params[0].tensor.grad(), before)) << "max_grad_norm 0 must leave gradients alone";
  EXPECT_THROW(opt.set_max_grad_norm(-1.0), InvalidArgument);
  EXPECT_THROW(opt.set_max_grad_norm(NAN), InvalidArgument);
}

TEST(GradClipping, ANonFiniteGradientSkipsTheWholeStep) {
  const GptShape s;
  NamedParameters params = orthotron::testing::gpt_params(s, 5);
  MuonWithAdamW opt(params, default_groups(), default_routing_rules(), orthotron::testing::gpt_splits(s));
  opt.set_max_grad_norm(1.0);
  set_grads(params, 8, 0.1);
  opt.step();
  const NamedParameters after_one = clone_params(params);
  const StateDict state = opt.state_dict();
  std::map<std::string, at::Tensor> saved;  // copies: a state dict may share storage with the live state
  for (const auto& [key, t] : state.tensors) saved[key] = t.clone();
  set_grads(params, 9, 0.1);
  params[3].tensor.mutable_grad()[0] = NAN;
  opt.step();
  EXPECT_TRUE(opt.last_step_skipped());
  EXPECT_TRUE(std::isnan(opt.last_grad_norm()));
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(at::equal(params[i].tensor, after_one[i].tensor)) << params[i].name << " moved on a skipped step";
  }
  const StateDict again = opt.state_dict();
  ASSERT_EQ(again.tensors.size(), saved.size());
  for (const auto& [key, t] : saved) {
    EXPECT_TRUE(at::equal(again.tensors.at(key), t)) << key << " changed on a skipped step";
  }
  EXPECT_EQ(again.metadata, state.metadata) << "step counts must not advance on a skipped step";
  set_grads(params, 10, 0.1);
  opt.step();
  EXPECT_FALSE(opt.last_step_skipped());
}

}  // namespace
}  // namespace orthotron
