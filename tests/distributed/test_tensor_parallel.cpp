// test_tensor_parallel.cpp: tensor parallelism on real ranks (CTest runs it with 2 and 4): the
// TP GPT's loss and gradients against the TP=1 model; the TP x DP distributed Muon step bitwise
// against the single-process container given the same gradients, with every logical matrix
// orthogonalized exactly once in the grid (QKV gathered to a TP owner, or per-head parts local to
// the pieces); the state dict's round trip on the grid; the divisibility error.
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "base/errors.h"
#include "engine/model/gpt_model.h"
#include "gpt_fixture.h"
#include "mpi_world.h"
#include "optim/distributed_muon_with_adamw.h"
#include "optim/muon_with_adamw.h"
#include "parallel/process_grid.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::world;

// Heads, query groups, FFN width and vocabulary all divide by 1, 2 and 4.
GptOptions tp_options(SplitGranularity split = SplitGranularity::kQkv) {
  GptOptions o;
  o.num_layers = 2;
  o.hidden_size = 64;
  o.num_attention_heads = 8;
  o.num_query_groups = 4;
  o.ffn_hidden_size = 96;
  o.vocab_size = 128;
  o.max_seq_length = 16;
  o.qkv_split = split;
  return o;
}

// The TP sizes this world can run: 2, and the whole world when it is larger.
std::vector<int> tp_sizes() {
  std::vector<int> out;
  for (int t : {2, 4}) {
    if (t <= world().size() && world().size() % t == 0) out.push_back(t);
  }
  return out;
}

// Tokens and labels the same on every rank.
std::pair<at::Tensor, at::Tensor> batch(int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  const at::Tensor t = at::randint(0, vocab, {3, 16}, at::kLong);
  return {t, at::roll(t, -1, 1)};
}

TEST(TensorParallelGpt, LossAndGradientsMatchTheSingleRankModel) {
  if (tp_sizes().empty()) GTEST_SKIP() << "needs 2 or more ranks";
  for (int T : tp_sizes()) {
    ProcessGrid grid(world(), T);
    const GptOptions o = tp_options();
    GptModel whole(o, 7), tp(o, 7, at::kCPU, &grid.tp());
    const TensorParallelLayout layout = tp.tp_layout();
    for (size_t i = 0; i < whole.parameters().size(); ++i) {
      const auto& p = tp.parameters()[i];
      EXPECT_TRUE(at::equal(
          p.tensor, tp_piece(whole.parameters()[i].tensor.detach(), layout.of(p.name), grid.coords().tp_rank, T)))
          << "initial piece of " << p.name << " at TP=" << T;
    }
    EXPECT_EQ(tp.num_parameters(), whole.num_parameters());
    EXPECT_DOUBLE_EQ(tp.flops_per_token(16), whole.flops_per_token(16));
    const auto [tokens, labels] = batch(o.vocab_size, 3);
    const at::Tensor loss_whole = whole.loss(tokens, labels), loss_tp = tp.loss(tokens, labels);
    loss_whole.backward();
    loss_tp.backward();
    EXPECT_NEAR(loss_tp.item<double>(), loss_whole.item<double>(), 1e-5 * loss_whole.item<double>()) << "TP=" << T;
    for (size_t i = 0; i < whole.parameters().size(); ++i) {
      const auto& p = tp.parameters()[i];
      const at::Tensor expected =
          tp_piece(whole.parameters()[i].tensor.grad(), layout.of(p.name), grid.coords().tp_rank, T);
      const double scale = expected.abs().max().item<double>();
      EXPECT_LE(orthotron::testing::max_abs_diff(p.tensor.grad(), expected), 1e-5 * scale + 1e-9)
          << "gradient of " << p.name << " at TP=" << T << " on rank " << world().rank();
    }
  }
}

TEST(TensorParallelGpt, RefusesSizesThatDoNotDivide) {
  if (tp_sizes().empty()) GTEST_SKIP() << "needs 2 or more ranks";
  ProcessGrid grid(world(), 2);
  GptOptions o = tp_options();
  o.num_query_groups = 1;  // one key/value head cannot be cut in two
  try {
    GptModel m(o, 1, at::kCPU, &grid.tp());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.num_query_groups = 1 does not divide by parallel.tensor_parallel = 2"),
              std::string::npos)
        << e.what();
  }
}

std::vector<ParamGroup> test_groups() {
  auto g = default_groups();
  g[0].muon.lr = 0.03;
  g[0].muon.weight_decay = 0.1;
  g[1].adamw.lr = 0.01;
  g[1].adamw.weight_decay = 0.05;
  return g;
}

// Gradients whose sums are exact in fp32 in any order, so the data-parallel average equals the
// reference's (sum / DP) bit for bit.
at::Tensor exact_grad(at::IntArrayRef shape, uint64_t seed) {
  at::manual_seed(seed);
  return at::randint(-4096, 4096, shape, at::kLong).to(at::kFloat) / 1024.0;
}

// Runs `steps` steps of the TP x DP optimizer on TP pieces and of the single-process container on
// the logical parameters with the same gradients; expects every piece bitwise equal to the
// reference's piece, and the grid's Newton-Schulz matrices to add up to the reference's.
void expect_grid_step_bitwise(int T, SplitGranularity split) {
  ProcessGrid grid(world(), T);
  const int D = grid.shape().dp, t = grid.coords().tp_rank, d = grid.coords().dp_rank;
  const GptOptions o = tp_options(split);
  GptModel whole(o, 5), tp(o, 5, at::kCPU, &grid.tp());
  const TensorParallelLayout layout = tp.tp_layout();
  NamedParameters ref = orthotron::testing::clone_params(whole.parameters());
  NamedParameters mine = orthotron::testing::clone_params(tp.parameters());
  MuonWithAdamW sopt(ref, test_groups(), default_routing_rules(), whole.splits());
  DistributedMuonWithAdamW gopt(mine, grid.dp(), test_groups(), default_routing_rules(), whole.splits(),
                                TensorParallelContext{&grid.tp(), layout});
  for (int step = 0; step < 4; ++step) {
    for (size_t i = 0; i < ref.size(); ++i) {
      at::Tensor sum = at::zeros(ref[i].tensor.sizes());
      for (int q = 0; q < D; ++q) {
        const at::Tensor g = exact_grad(ref[i].tensor.sizes(), 1000003ULL * step + 1009ULL * q + i);
        sum += g;
        if (q == d) mine[i].tensor.mutable_grad() = tp_piece(g, layout.of(mine[i].name), t, T);
      }
      ref[i].tensor.mutable_grad() = sum / static_cast<double>(D);
    }
    sopt.step();
    gopt.step();
  }
  const std::string what = "TP=" + std::to_string(T) + " x DP=" + std::to_string(D) + " split " + to_string(split);
  for (size_t i = 0; i < ref.size(); ++i) {
    const at::Tensor expected = tp_piece(ref[i].tensor.detach(), layout.of(mine[i].name), t, T);
    EXPECT_TRUE(at::equal(mine[i].tensor, expected))
        << what << ": " << mine[i].name << " differs on rank " << world().rank() << ", max abs diff "
        << orthotron::testing::max_abs_diff(mine[i].tensor, expected);
  }
  // Each logical matrix (or split part) once in the whole grid.
  for (const auto& [group, count] : sopt.last_ns_counts()) {
    const auto it = gopt.last_ns_counts().find(group);
    at::Tensor n = at::full({1}, it == gopt.last_ns_counts().end() ? int64_t{0} : it->second.matrices, at::kLong);
    world().all_reduce(n, ReduceOp::kSum);
    EXPECT_EQ(n.item<int64_t>(), count.matrices) << what << ": matrices orthogonalized in the grid, group " << group;
  }
}

TEST(TensorParallelMuon, GridStepEqualsSingleProcessBitwise) {
  if (tp_sizes().empty()) GTEST_SKIP() << "needs 2 or more ranks";
  for (int T : tp_sizes()) {
    expect_grid_step_bitwise(T, SplitGranularity::kQkv);      // QKV gathered to its TP owner
    expect_grid_step_bitwise(T, SplitGranularity::kPerHead);  // per-head parts local to the pieces
    expect_grid_step_bitwise(T, SplitGranularity::kNone);     // the fused matrix gathered whole
  }
}

TEST(TensorParallelMuon, PerHeadQkvStaysLocalAndTheRestIsGathered) {
  if (tp_sizes().empty()) GTEST_SKIP() << "needs 2 or more ranks";
  ProcessGrid grid(world(), 2);
  GptModel whole(tp_options(SplitGranularity::kPerHead), 5),
      tp(tp_options(SplitGranularity::kPerHead), 5, at::kCPU, &grid.tp());
  DistributedMuonWithAdamW opt(orthotron::testing::clone_params(tp.parameters()), grid.dp(), test_groups(),
                               default_routing_rules(), whole.splits(),
                               TensorParallelContext{&grid.tp(), tp.tp_layout()});
  const GridPlan& plan = opt.grid_plan();
  for (size_t i = 0; i < plan.logical.size(); ++i) {
    const std::string& name = plan.logical[i].name;
    if (plan.logical[i].algorithm != Algorithm::kMuon) continue;
    const bool qkv = name.find("linear_qkv") != std::string::npos;
    EXPECT_EQ(plan.gathered[i] != 0, !qkv) << name;
    EXPECT_EQ(plan.tp_owner[i] >= 0, !qkv) << name;
    if (qkv) {
      EXPECT_EQ(plan.local_splits.at(name).parts.size(), 8u) << name << ": 4 query, 2 key, 2 value heads";
    }
  }
}

TEST(TensorParallelMuon, StateDictRoundTripOnTheSameGrid) {
  if (tp_sizes().empty()) GTEST_SKIP() << "needs 2 or more ranks";
  ProcessGrid grid(world(), 2);
  const GptOptions o = tp_options();
  GptModel whole(o, 9), tp(o, 9, at::kCPU, &grid.tp());
  auto make = [&](NamedParameters p) {
    return std::make_unique<DistributedMuonWithAdamW>(std::move(p), grid.dp(), test_groups(), default_routing_rules(),
                                                      whole.splits(),
                                                      TensorParallelContext{&grid.tp(), tp.tp_layout()});
  };
  NamedParameters a = orthotron::testing::clone_params(tp.parameters());
  auto opt_a = make(a);
  auto set_grads = [&](NamedParameters& p, int step) {
    for (size_t i = 0; i < p.size(); ++i)
      p[i].tensor.mutable_grad() = exact_grad(p[i].tensor.sizes(), 77ULL * step + i + 1000ULL * world().rank());
  };
  for (int step = 0; step < 2; ++step) {
    set_grads(a, step);
    opt_a->step();
  }
  const StateDict sd = opt_a->state_dict();
  NamedParameters b = orthotron::testing::clone_params(a);
  auto opt_b = make(b);
  const LoadReport report = opt_b->load_state_dict(sd);
  EXPECT_TRUE(report.complete()) << report.to_string();
  for (int step = 2; step < 4; ++step) {
    set_grads(a, step);
    set_grads(b, step);
    opt_a->step();
    opt_b->step();
  }
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].tensor, b[i].tensor)) << a[i].name;
  EXPECT_EQ(opt_a->state_elements(), opt_b->state_elements());
}

}  // namespace
}  // namespace orthotron
