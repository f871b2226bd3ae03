// test_gpt_model.cpp: the GPT decoder: names and shapes against the shared fixture, the fused model
// against the unfused written-out reference (logits and gradients), causality, seeded determinism,
// initialization statistics, the Muon splits and routing, option and input errors, the FLOP count,
// rotary properties, and a short training run that must lower the loss.
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "base/errors.h"
#include "engine/model/gpt_model.h"
#include "engine/model/gpt_reference.h"
#include "gpt_fixture.h"
#include "optim/muon_with_adamw.h"
#include "test_util.h"

namespace orthotron {
namespace {

using testing::contains;
using testing::max_abs_diff;

GptOptions options_of(const testing::GptShape& s) {
  GptOptions o;
  o.num_layers = s.layers;
  o.hidden_size = s.hidden;
  o.num_attention_heads = s.heads;
  o.num_query_groups = s.kv_heads;
  o.ffn_hidden_size = s.ffn;
  o.vocab_size = s.vocab;
  o.max_seq_length = 16;
  return o;
}

at::Tensor random_tokens(int64_t b, int64_t s, int64_t vocab, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(vocab, {b, s}, gen, at::TensorOptions().dtype(at::kLong));
}

TEST(GptModel, NamesAndShapesAreTheFixtures) {
  const testing::GptShape shape;  // layers 2, hidden 32, heads 4, kv 2, ffn 48, vocab 64
  const auto expected = testing::gpt_shapes(shape);
  for (bool bias : {true, false}) {
    for (bool tied : {false, true}) {
      GptOptions o = options_of(shape);
      o.add_qkv_bias = bias;
      o.tie_embeddings = tied;
      const GptModel model(o, 1);
      std::vector<std::pair<std::string, std::vector<int64_t>>> want;
      for (const auto& e : expected) {
        if (!bias && contains(e.first, "linear_qkv.bias")) continue;
        if (tied && e.first == "output_layer.weight") continue;
        want.push_back(e);
      }
      ASSERT_EQ(model.parameters().size(), want.size()) << "bias " << bias << " tied " << tied;
      int64_t numel = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        const auto& p = model.parameters()[i];
        EXPECT_EQ(p.name, want[i].first);
        EXPECT_EQ(p.tensor.sizes().vec(), want[i].second) << p.name;
        EXPECT_TRUE(p.tensor.is_leaf() && p.tensor.requires_grad()) << p.name;
        EXPECT_EQ(p.tensor.scalar_type(), at::kFloat) << p.name;
        numel += p.tensor.numel();
      }
      EXPECT_EQ(model.num_parameters(), numel);
      // The same tensors every call.
      EXPECT_TRUE(model.parameters()[1].tensor.is_same(model.layer(0).input_layernorm));
    }
  }
}

// Perturbs every parameter (norm weights and biases included, which start at 1 and 0) so that each
// row of each fused weight matters, and scales the weights up so attention carries real signal.
void perturb(const GptModel& model, uint64_t seed) {
  at::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (const auto& p : model.parameters()) {
    p.tensor.mul_(4.0).add_(at::randn(p.tensor.sizes(), gen) * 0.1);
  }
}

struct Variant {
  int64_t groups;
  bool tied, bias;
};

// The model computes in float32 and the reference in float64 from the same values, so the
// difference is the model's rounding: unit roundoff 6e-8, dot products of at most 96 terms, two
// layers of norm/attention/MLP. That is ~1e-6 of the largest magnitude; 2e-5 leaves headroom while
// a misplaced row, a wrong rotary or a missing bias moves logits by > 1e-2 of it (checked below).
constexpr double kRelTol = 2e-5;

TEST(GptModel, FusedEqualsUnfusedReferenceLogitsAndGradients) {
  for (const Variant v : {Variant{4, false, false}, Variant{2, false, true}, Variant{1, true, true},
                          Variant{2, true, false}, Variant{4, true, true}}) {
    SCOPED_TRACE("groups " + std::to_string(v.groups) + " tied " + std::to_string(v.tied) + " bias " +
                 std::to_string(v.bias));
    GptOptions o = options_of(testing::GptShape{});
    o.num_query_groups = v.groups;
    o.tie_embeddings = v.tied;
    o.add_qkv_bias = v.bias;
    const GptModel model(o, 7);
    perturb(model, 8);
    const at::Tensor tokens = random_tokens(3, 16, o.vocab_size, 9), labels = random_tokens(3, 16, o.vocab_size, 10);

    const at::Tensor logits = model.forward(tokens);
    ASSERT_EQ(logits.sizes().vec(), (std::vector<int64_t>{3, 16, o.vocab_size}));
    ASSERT_EQ(logits.scalar_type(), at::kFloat);
    const UnfusedGpt ref = unfuse_gpt(model);
    const at::Tensor ref_logits = reference_forward(ref, tokens);
    const double scale = ref_logits.abs().max().item<double>();
    ASSERT_GT(scale, 0.5);
    EXPECT_LE(max_abs_diff(logits, ref_logits), kRelTol * scale);

    // The comparison can see errors: a different rotary base moves the logits far beyond the tolerance.
    UnfusedGpt other_base = ref;
    other_base.options.rotary_base = 500.0;
    EXPECT_GT(max_abs_diff(reference_forward(other_base, tokens), ref_logits), 1e-2 * scale);

    const at::Tensor loss = model.loss(tokens, labels);
    const at::Tensor ref_loss = reference_loss(ref, tokens, labels);
    EXPECT_NEAR(loss.item<double>(), ref_loss.item<double>(), 1e-5 * ref_loss.item<double>());
    loss.backward();
    ref_loss.backward();
    const NamedParameters ref_grads = fused_gradients(ref, model);
    ASSERT_EQ(ref_grads.size(), model.parameters().size());
    for (size_t i = 0; i < ref_grads.size(); ++i) {
      const auto& p = model.parameters()[i];
      ASSERT_EQ(ref_grads[i].name, p.name);
      ASSERT_TRUE(p.tensor.grad().defined()) << p.name;
      const double g_scale = ref_grads[i].tensor.abs().max().item<double>();
      EXPECT_GT(g_scale, 0.0) << p.name;
      EXPECT_LE(max_abs_diff(p.tensor.grad(), ref_grads[i].tensor), 1e-4 * g_scale) << p.name;
    }
  }
}

TEST(GptModel, ReferenceForwardUnfusedIsTheReference) {
  const GptModel model(options_of(testing::GptShape{}), 3);
  const at::Tensor tokens = random_tokens(2, 5, 64, 4);
  EXPECT_TRUE(at::equal(reference_forward_unfused(model, tokens), reference_forward(unfuse_gpt(model), tokens)));
}

TEST(GptModel, LaterTokensDoNotChangeEarlierLogits) {
  const GptModel model(options_of(testing::GptShape{}), 11);
  perturb(model, 12);
  const at::Tensor tokens = random_tokens(2, 16, 64, 13);
  const at::Tensor base = model.forward(tokens);
  for (int64_t t : {1, 6, 15}) {
    at::Tensor changed = tokens.clone();
    changed.select(1, t).add_(1).remainder_(64);
    const at::Tensor logits = model.forward(changed);
    EXPECT_TRUE(at::equal(logits.narrow(1, 0, t), base.narrow(1, 0, t))) << "t " << t;
    EXPECT_GT(max_abs_diff(logits.select(1, t), base.select(1, t)), 1e-3) << "t " << t;
    if (t + 1 < 16) {  // and later positions do see it
      EXPECT_GT(max_abs_diff(logits.narrow(1, t + 1, 16 - t - 1), base.narrow(1, t + 1, 16 - t - 1)), 1e-4);
    }
  }
}

TEST(GptModel, SeededInitializationIsDeterministicAndIgnoresTheGlobalRng) {
  const GptOptions o = options_of(testing::GptShape{});
  at::manual_seed(1);
  const GptModel a(o, 42);
  const at::Tensor after_a = at::randn({4});
  at::manual_seed(2);
  const GptModel b(o, 42);
  at::manual_seed(1);
  EXPECT_TRUE(at::equal(at::randn({4}), after_a)) << "construction advanced the global RNG";
  const GptModel c(o, 43);
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    EXPECT_TRUE(at::equal(a.parameters()[i].tensor, b.parameters()[i].tensor)) << a.parameters()[i].name;
    if (a.parameters()[i].tensor.dim() == 2) {
      EXPECT_FALSE(at::equal(a.parameters()[i].tensor, c.parameters()[i].tensor)) << a.parameters()[i].name;
    }
  }
  const at::Tensor tokens = random_tokens(2, 8, 64, 5);
  EXPECT_TRUE(at::equal(a.forward(tokens), b.forward(tokens)));
  EXPECT_FALSE(at::equal(a.forward(tokens), c.forward(tokens)));
}

TEST(GptModel, InitializationStatistics) {
  GptOptions o;
  o.num_layers = 8;
  o.hidden_size = 256;
  o.num_attention_heads = 8;
  o.num_query_groups = 4;
  o.ffn_hidden_size = 512;
  o.vocab_size = 2048;
  o.add_qkv_bias = true;
  o.init_std = 0.03;
  const GptModel model(o, 5);
  const double out_std = 0.03 / std::sqrt(16.0);
  for (const auto& p : model.parameters()) {
    const at::Tensor t = p.tensor.detach();
    if (p.tensor.dim() == 1) {
      const double want = contains(p.name, "bias") ? 0.0 : 1.0;
      EXPECT_TRUE(at::equal(t, at::full_like(t, want))) << p.name;
      continue;
    }
    const bool output_projection = contains(p.name, "linear_proj") || contains(p.name, "linear_fc2");
    const double want = output_projection ? out_std : 0.03;
    EXPECT_NEAR(t.std().item<double>(), want, 0.05 * want) << p.name;  // >= 65k samples: std's error < 1%
    EXPECT_LT(std::abs(t.mean().item<double>()), 0.05 * want) << p.name;
  }
}

const at::TensorOptions kInt64 = at::TensorOptions().dtype(at::kLong);

// Row indices of the interleaved layout, computed by labelling rows and slicing the grouped view.
TEST(GptModel, SplitsAreTheInterleavedQkvRowsAndGateUp) {
  for (const int64_t groups : {4, 2, 1}) {
    GptOptions o = options_of(testing::GptShape{});
    o.num_query_groups = groups;
    const int64_t d = o.head_dim(), qpg = o.num_attention_heads / groups;
    const at::Tensor labels = at::arange((o.num_attention_heads + 2 * groups) * d, kInt64).view({groups, qpg + 2, d});
    const at::Tensor q = labels.narrow(1, 0, qpg).reshape({-1}), k = labels.select(1, qpg).reshape({-1}),
                     v = labels.select(1, qpg + 1).reshape({-1});
    const GptModel model(o, 1);
    const SplitRegistry splits = model.splits();
    EXPECT_EQ(splits.all().size(), static_cast<size_t>(2 * o.num_layers));
    const ParamSplit* qkv = splits.find("decoder.layers.1.self_attention.linear_qkv.weight");
    ASSERT_NE(qkv, nullptr);
    ASSERT_EQ(qkv->parts.size(), 3u);
    EXPECT_EQ(qkv->parts[0].name, "q");
    EXPECT_TRUE(at::equal(qkv->parts[0].rows, q));
    EXPECT_TRUE(at::equal(qkv->parts[1].rows, k));
    EXPECT_TRUE(at::equal(qkv->parts[2].rows, v));
    const ParamSplit* fc1 = splits.find("decoder.layers.0.mlp.linear_fc1.weight");
    ASSERT_NE(fc1, nullptr);
    ASSERT_EQ(fc1->parts.size(), 2u);
    EXPECT_TRUE(at::equal(fc1->parts[0].rows, at::arange(o.ffn_hidden_size, kInt64)));
    EXPECT_TRUE(at::equal(fc1->parts[1].rows, at::arange(o.ffn_hidden_size, 2 * o.ffn_hidden_size, kInt64)));

    o.qkv_split = SplitGranularity::kPerHead;
    const SplitRegistry per_head_splits = GptModel(o, 1).splits();
    const ParamSplit* per_head = per_head_splits.find("decoder.layers.0.self_attention.linear_qkv.weight");
    ASSERT_NE(per_head, nullptr);
    ASSERT_EQ(per_head->parts.size(), static_cast<size_t>(o.num_attention_heads + 2 * groups));
    EXPECT_TRUE(at::equal(per_head->parts[3].rows, q.narrow(0, 3 * d, d)));
    o.qkv_split = SplitGranularity::kNone;
    const SplitRegistry none = GptModel(o, 1).splits();
    EXPECT_EQ(none.find("decoder.layers.0.self_attention.linear_qkv.weight"), nullptr);
    EXPECT_NE(none.find("decoder.layers.0.mlp.linear_fc1.weight"), nullptr);
  }
}

TEST(GptModel, DefaultRoutingSendsExactlyTheHiddenMatricesToMuon) {
  for (bool tied : {false, true}) {
    GptOptions o = options_of(testing::GptShape{});
    o.add_qkv_bias = true;
    o.tie_embeddings = tied;
    const GptModel model(o, 1);
    const auto groups = default_groups();
    const auto assignment = route_parameters(logical_shapes(model.parameters()), groups, default_routing_rules());
    ASSERT_EQ(assignment.size(), model.parameters().size());
    for (const Assignment& a : assignment) {
      const bool hidden = contains(a.param, ".weight") && a.shape.size() == 2 && contains(a.param, "decoder.layers.");
      EXPECT_EQ(groups[a.group_index].algorithm, hidden ? Algorithm::kMuon : Algorithm::kAdamW) << a.param;
    }
    EXPECT_NO_THROW(check_split_routing(assignment, groups, model.splits()));
  }
}

TEST(GptModel, InvalidOptionsNameTheField) {
  struct Case {
    void (*edit)(GptOptions&);
    const char* field;
  };
  const Case cases[] = {
      {[](GptOptions& o) { o.num_layers = 0; }, "model.num_layers = 0"},
      {[](GptOptions& o) { o.hidden_size = 30; }, "model.hidden_size = 30"},
      {[](GptOptions& o) { o.num_query_groups = 3; }, "model.num_query_groups = 3"},
      {[](GptOptions& o) { o.num_attention_heads = 0; }, "model.num_attention_heads = 0"},
      {[](GptOptions& o) { o.hidden_size = 12; }, "head_dim"},  // 12 / 4 = 3: odd
      {[](GptOptions& o) { o.ffn_hidden_size = -1; }, "model.ffn_hidden_size = -1"},
      {[](GptOptions& o) { o.vocab_size = 0; }, "model.vocab_size"},
      {[](GptOptions& o) { o.max_seq_length = 0; }, "model.max_seq_length"},
      {[](GptOptions& o) { o.rotary_base = 0; }, "model.rotary_base"},
      {[](GptOptions& o) { o.norm_epsilon = -1e-5; }, "model.norm_epsilon"},
      {[](GptOptions& o) { o.init_std = std::nan(""); }, "model.init_std"},
  };
  for (const Case& c : cases) {
    GptOptions o;
    c.edit(o);
    const std::string msg = testing::thrown_message<ConfigError>([&] { GptModel(o, 1); });
    EXPECT_TRUE(contains(msg, c.field)) << msg;
  }
  EXPECT_NO_THROW(validate_gpt_options(GptOptions{}));
}

TEST(GptModel, BadInputsAreTypedErrors) {
  const GptModel model(options_of(testing::GptShape{}), 1);  // max_seq_length 16, vocab 64
  const at::Tensor ok = random_tokens(2, 4, 64, 1);
  EXPECT_TRUE(contains(testing::thrown_message<ShapeError>([&] { model.forward(ok.to(at::kInt)); }), "int64"));
  EXPECT_TRUE(contains(testing::thrown_message<ShapeError>([&] { model.forward(random_tokens(1, 17, 64, 1)); }),
                       "max_seq_length (16)"));
  EXPECT_TRUE(contains(testing::thrown_message<ShapeError>([&] { model.forward(ok.view({-1})); }), "[8]"));
  EXPECT_TRUE(contains(testing::thrown_message<InvalidArgument>([&] { model.forward(ok + 64); }), "vocab_size = 64"));
  EXPECT_TRUE(contains(testing::thrown_message<ShapeError>([&] { model.loss(ok, ok.narrow(1, 0, 3)); }), "labels"));
}

TEST(GptModel, FlopsPerTokenFollowsTheStatedFormula) {
  const testing::GptShape s;
  for (bool tied : {false, true}) {
    GptOptions o = options_of(s);
    o.tie_embeddings = tied;
    const GptModel model(o, 1);
    double matmul = 0;
    for (const auto& [name, shape] : testing::gpt_shapes(s)) {
      if (shape.size() == 2 && name != "embedding.word_embeddings.weight") matmul += double(shape[0] * shape[1]);
    }
    EXPECT_DOUBLE_EQ(model.flops_per_token(16), 6 * matmul + 12.0 * s.layers * 16 * s.hidden);
  }
}

TEST(Rotary, IdentityAtZeroNormPreservingAndRelative) {
  const int64_t d = 8;
  const RotaryTables tables = make_rotary_tables(32, d, 10000.0, at::kCPU);
  const at::Tensor x = at::randn({1, 1, 32, d}, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor r = apply_rotary(x, tables);
  EXPECT_TRUE(at::allclose(r.select(2, 0), x.select(2, 0)));
  const auto pair_norms = [&](const at::Tensor& t) {
    return t.narrow(-1, 0, d / 2).pow(2) + t.narrow(-1, d / 2, d / 2).pow(2);
  };
  EXPECT_TRUE(at::allclose(pair_norms(r), pair_norms(x), 1e-5, 1e-6));
  // <rot(q, p), rot(k, p')> depends on p - p' only.
  const at::Tensor q = at::randn({d}), k = at::randn({d});
  const at::Tensor rq = apply_rotary(q.expand({1, 1, 32, d}).contiguous(), tables).view({32, d});
  const at::Tensor rk = apply_rotary(k.expand({1, 1, 32, d}).contiguous(), tables).view({32, d});
  EXPECT_NEAR(rq[7].dot(rk[3]).item<double>(), rq[24].dot(rk[20]).item<double>(), 1e-4);
  EXPECT_GT(std::abs(rq[7].dot(rk[3]).item<double>() - rq[7].dot(rk[6]).item<double>()), 1e-3);
  EXPECT_THROW(make_rotary_tables(8, 7, 10000.0, at::kCPU), InvalidArgument);
  EXPECT_THROW(apply_rotary(at::randn({1, 1, 33, d}), tables), ShapeError);
}

TEST(GptModel, ThirtyStepsOfMuonWithAdamWMemorizeARepeatedSequence) {
  GptOptions o = options_of(testing::GptShape{});
  o.max_seq_length = 32;
  const GptModel model(o, 21);
  const at::Tensor seq = random_tokens(4, 33, o.vocab_size, 22);
  const at::Tensor tokens = seq.narrow(1, 0, 32).contiguous(), labels = seq.narrow(1, 1, 32).contiguous();
  auto groups = default_groups();
  groups[1].adamw.lr = 1e-2;
  MuonWithAdamW opt(model.parameters(), groups, default_routing_rules(), model.splits());
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    opt.zero_grad();
    const at::Tensor loss = model.loss(tokens, labels);
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  EXPECT_NEAR(first, std::log(64.0), 0.3);  // near-uniform predictions at initialization
  EXPECT_LT(last, 0.25 * first) << "first " << first << " last " << last;
}

TEST(GptModel, CudaMatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  GptOptions o = options_of(testing::GptShape{});
  const GptModel cpu(o, 31), gpu(o, 31, at::Device(at::kCUDA, 0));
  for (size_t i = 0; i < cpu.parameters().size(); ++i) {
    EXPECT_TRUE(at::equal(cpu.parameters()[i].tensor, gpu.parameters()[i].tensor.cpu()));
  }
  const at::Tensor tokens = random_tokens(2, 16, 64, 32);
  const at::Tensor a = cpu.forward(tokens), b = gpu.forward(tokens.cuda()).cpu();
  EXPECT_LE(max_abs_diff(a, b), 1e-3 * a.abs().max().item<double>());  // TF32 may be on for CUDA matmuls
}

}  // namespace
}  // namespace orthotron
