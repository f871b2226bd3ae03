// test_muon.cpp: tests of the single-parameter Muon update (optim/muon.h): 10 steps against an independent
// computation written here with plain at:: ops, expert stacks and conv filters, options validation, parsing,
// shape errors and the scale modes.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "base/errors.h"
#include "optim/momentum_fused.h"
#include "optim/muon.h"
#include "optim/newton_schulz.h"
#include "optim/update_fused.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::contains;
using orthotron::testing::max_abs_diff;
using orthotron::testing::thrown_message;

// ---------------------------------------------------------------------------------------------------------------
// The independent computation: Muon written out from muon.md with plain at:: ops, no orthotron code.

using Coeffs = std::vector<std::array<double, 3>>;

const Coeffs kQuintic = {{3.4445, -4.7750, 2.0315}};

struct Reference {
  double lr = 0.02;
  double beta = 0.95;
  double weight_decay = 0.0;
  bool nesterov = true;
  bool sum_form = false;
  int ns_steps = 5;
  Coeffs coeffs = kQuintic;
  double eps = 1e-7;
  std::string scale_mode = "original";
  double spectral_factor = 1.0;
};

double reference_scale(int64_t m, int64_t n, const Reference& r) {
  const double md = static_cast<double>(m), nd = static_cast<double>(n);
  if (r.scale_mode == "original") return std::sqrt(std::max(1.0, md / nd));
  if (r.scale_mode == "match_rms_adamw") return 0.2 * std::sqrt(std::max(md, nd));
  return std::sqrt(std::max(md, nd)) * r.spectral_factor;
}

at::Tensor reference_ns(const at::Tensor& u, const Reference& r) {
  at::Tensor x = u / (at::linalg_vector_norm(u, 2) + r.eps);
  const bool tall = x.size(0) > x.size(1);
  if (tall) x = x.t();
  for (int k = 0; k < r.ns_steps; ++k) {
    const auto& c = r.coeffs[std::min<size_t>(static_cast<size_t>(k), r.coeffs.size() - 1)];
    const at::Tensor a = at::mm(x, x.t());
    const at::Tensor b = c[1] * a + c[2] * at::mm(a, a);
    x = c[0] * x + at::mm(b, x);
  }
  if (tall) x = x.t();
  return x;
}

// Runs `grads.size()` reference steps on a 2-D weight; updates w and m in place (fresh tensors).
void reference_steps(at::Tensor& w, at::Tensor& m, const std::vector<at::Tensor>& grads, const Reference& r) {
  const double beta = r.beta;
  const double scale = reference_scale(w.size(0), w.size(1), r);
  for (const at::Tensor& g : grads) {
    at::Tensor u;
    if (!r.sum_form) {
      m = beta * m + (1 - beta) * g;
      u = r.nesterov ? (1 - beta) * g + beta * m : m;
    } else {
      m = beta * m + g;
      u = r.nesterov ? g + beta * m : m;
    }
    const at::Tensor o = reference_ns(u, r);
    w = w * (1 - r.lr * r.weight_decay) - r.lr * scale * o;
  }
}

struct MuonCase {
  std::string name;
  MuonOptions options;
  Reference reference;
};

void PrintTo(const MuonCase& c, std::ostream* os) {
  *os << c.name;
}

std::vector<MuonCase> muon_cases() {
  std::vector<MuonCase> cases;
  const Coeffs custom = {{3.0, -3.2, 1.2}, {2.5, -2.6, 1.1}, {1.875, -1.25, 0.375}};
  cases.push_back({"defaults", MuonOptions{}, Reference{}});
  {
    MuonCase c{"lr_0_1", MuonOptions{}, Reference{}};
    c.options.lr = c.reference.lr = 0.1;
    cases.push_back(c);
  }
  {
    MuonCase c{"weight_decay_0_2", MuonOptions{}, Reference{}};
    c.options.weight_decay = c.reference.weight_decay = 0.2;
    cases.push_back(c);
  }
  {
    MuonCase c{"momentum_0_8", MuonOptions{}, Reference{}};
    c.options.momentum = c.reference.beta = 0.8;
    cases.push_back(c);
  }
  {
    MuonCase c{"ns_steps_6", MuonOptions{}, Reference{}};
    c.options.ns.steps = c.reference.ns_steps = 6;
    cases.push_back(c);
  }
  {
    MuonCase c{"custom_coefficients", MuonOptions{}, Reference{}};
    c.options.ns.schedule = ns_custom_schedule({{3.0, -3.2, 1.2}, {2.5, -2.6, 1.1}, {1.875, -1.25, 0.375}});
    c.reference.coeffs = custom;
    cases.push_back(c);
  }
  {
    MuonCase c{"scale_original", MuonOptions{}, Reference{}};
    c.options.scale_mode = ScaleMode::kOriginal;
    c.reference.scale_mode = "original";
    cases.push_back(c);
  }
  {
    MuonCase c{"scale_match_rms_adamw", MuonOptions{}, Reference{}};
    c.options.scale_mode = ScaleMode::kMatchRmsAdamW;
    c.reference.scale_mode = "match_rms_adamw";
    cases.push_back(c);
  }
  {
    MuonCase c{"scale_spectral_1_5", MuonOptions{}, Reference{}};
    c.options.scale_mode = ScaleMode::kSpectral;
    c.options.spectral_factor = 1.5;
    c.reference.scale_mode = "spectral";
    c.reference.spectral_factor = 1.5;
    cases.push_back(c);
  }
  {
    MuonCase c{"nesterov_off", MuonOptions{}, Reference{}};
    c.options.nesterov = c.reference.nesterov = false;
    cases.push_back(c);
  }
  {
    MuonCase c{"momentum_form_sum", MuonOptions{}, Reference{}};
    c.options.momentum_form = MomentumForm::kSum;
    c.reference.sum_form = true;
    cases.push_back(c);
  }
  {
    MuonCase c{"momentum_form_sum_nesterov_off", MuonOptions{}, Reference{}};
    c.options.momentum_form = MomentumForm::kSum;
    c.options.nesterov = false;
    c.reference.sum_form = true;
    c.reference.nesterov = false;
    cases.push_back(c);
  }
  {
    MuonCase c{"everything_changed", MuonOptions{}, Reference{}};
    c.options.lr = c.reference.lr = 0.05;
    c.options.weight_decay = c.reference.weight_decay = 0.1;
    c.options.momentum = c.reference.beta = 0.9;
    c.options.scale_mode = ScaleMode::kMatchRmsAdamW;
    c.reference.scale_mode = "match_rms_adamw";
    cases.push_back(c);
  }
  return cases;
}

struct ShapeCase {
  int64_t m;
  int64_t n;
};

void PrintTo(const ShapeCase& s, std::ostream* os) {
  *os << s.m << "x" << s.n;
}

class MuonEqualsReference : public ::testing::TestWithParam<std::tuple<MuonCase, ShapeCase>> {};

TEST_P(MuonEqualsReference, TenSteps) {
  const auto& [c, shape] = GetParam();
  ASSERT_NO_THROW(c.options.validate());
  at::manual_seed(2024);
  const at::Tensor w0 = 0.1 * at::randn({shape.m, shape.n});  // weight-like scale: the updates are not lost in W's ulp
  std::vector<at::Tensor> grads;
  for (int t = 0; t < 10; ++t) grads.push_back(at::randn({shape.m, shape.n}));

  at::Tensor w = w0.clone();
  at::Tensor m = at::zeros_like(w);
  for (const at::Tensor& g : grads) muon_step(w, g, m, c.options, "w");

  at::Tensor w_ref = w0.clone();
  at::Tensor m_ref = at::zeros_like(w0);
  reference_steps(w_ref, m_ref, grads, c.reference);

  // The weights moved: the comparison below is not between two untouched copies.
  ASSERT_GT(max_abs_diff(w_ref, w0), 1e-3);
  // fp32, atol 1e-6. The two sides round differently (lerp vs mul-add momentum, baddbmm vs separate mm/add in
  // NS), which costs one or two fp32 ulp of W over 10 steps: measured at most 4.2e-7 (spectral scale, |W| ~ 2).
  const double dw = max_abs_diff(w, w_ref);
  EXPECT_LE(dw, 1e-6) << "weights after 10 steps";
  // The momentum buffer is the parameter's shape and follows the chosen form (ema and sum differ by a
  // factor 1/(1-beta) that NS's scale invariance would otherwise hide). Relative: sum-form entries reach ~20.
  const double dm = max_abs_diff(m, m_ref) / std::max(1.0, m_ref.abs().max().item<double>());
  EXPECT_LE(dm, 1e-6) << "momentum buffer after 10 steps";
}

INSTANTIATE_TEST_SUITE_P(Cases, MuonEqualsReference,
                         ::testing::Combine(::testing::ValuesIn(muon_cases()),
                                            ::testing::Values(ShapeCase{48, 112}, ShapeCase{112, 48})),
                         [](const ::testing::TestParamInfo<std::tuple<MuonCase, ShapeCase>>& param_info) {
                           const auto& shape = std::get<1>(param_info.param);
                           return std::get<0>(param_info.param).name + "_" + std::to_string(shape.m) + "x" +
                                  std::to_string(shape.n);
                         });

// The fused EMA momentum + Nesterov pass (momentum_fused.h) gives the bits of ATen's two lerps,
// for every tail length of a vector, weights on both sides of 0.5, at 1 and 2 threads; the Muon
// direction takes it for float32 contiguous tensors and ATen's lerps otherwise, with the same result.
TEST(MuonMomentum, FusedPassEqualsTheTwoAtenLerps) {
  const int saved = at::get_num_threads();
  at::manual_seed(31);
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (int64_t n : {1, 7, 15, 16, 17, 31, 33, 100, 4099, 70001, 300007}) {
      for (double beta : {0.95, 0.9, 0.5, 0.3, 0.0}) {
        SCOPED_TRACE("n " + std::to_string(n) + " beta " + std::to_string(beta) + " threads " +
                     std::to_string(threads));
        const at::Tensor g = at::randn({n}), m0 = at::randn({n});
        at::Tensor m_ref = m0.clone();
        m_ref.lerp_(g, 1.0 - beta);
        const at::Tensor u_ref = g.lerp(m_ref, beta);
        ASSERT_TRUE(ema_nesterov_fused_supported(g, m0));
        at::Tensor m = m0.clone();
        const at::Tensor u = ema_nesterov_fused(g, m, beta);
        EXPECT_TRUE(at::equal(m, m_ref));
        EXPECT_TRUE(at::equal(u, u_ref));
      }
    }
  }
  at::set_num_threads(saved);
  // Through muon_momentum_direction: a transposed (non-contiguous) gradient takes ATen's lerps.
  const at::Tensor g = at::randn({40, 24});
  MuonOptions opt;
  at::Tensor m_fused = at::randn({40, 24}), m_aten = m_fused.clone();
  EXPECT_FALSE(ema_nesterov_fused_supported(g.t(), m_aten.t()));
  const at::Tensor u_fused = muon_momentum_direction(g, m_fused, opt);
  const at::Tensor u_aten = muon_momentum_direction(g.t().contiguous().t(), m_aten, opt);
  EXPECT_TRUE(at::equal(u_fused, u_aten));
  EXPECT_TRUE(at::equal(m_fused, m_aten));
}

// The fused passes over a Newton-Schulz result (update_fused.h) give the bits of their references:
// the update those of muon_apply_update_reference (ATen's mul_ and add_ of the result made
// contiguous), the copy those of ATen's copy, for wide results, tall ones (a transposed view, as
// newton_schulz_matrix returns them), odd shapes that leave every tail and partial tile, float32 and
// bfloat16 results, with and without weight decay (and one too small to change 1 - lr wd in float32),
// at 1 and 2 threads.
TEST(MuonUpdate, FusedPassesEqualTheirReferences) {
  const int saved = at::get_num_threads();
  at::manual_seed(32);
  struct Case {
    int64_t m, n;
  };
  const std::vector<Case> cases = {{3072, 512}, {512, 3072}, {2048, 512}, {512, 512}, {33, 17}, {17, 33},
                                   {1000, 37},  {37, 1000},  {1, 5},      {70, 1},    {65, 64}, {64, 65}};
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (const Case& c : cases) {
      for (const at::ScalarType dtype : {at::kBFloat16, at::kFloat}) {
        // As newton_schulz_matrix returns it: a tall matrix's result is the transposed view of a
        // contiguous [n, m] buffer.
        const at::Tensor result = c.m > c.n ? at::randn({c.n, c.m}).to(dtype).t() : at::randn({c.m, c.n}).to(dtype);
        for (double wd : {0.0, 1e-12, 0.1}) {  // 1e-12: set, yet 1 - lr wd rounds to 1 in float32
          SCOPED_TRACE(std::to_string(c.m) + "x" + std::to_string(c.n) + " " + c10::toString(dtype) + " wd " +
                       std::to_string(wd) + " threads " + std::to_string(threads));
          MuonOptions opt;
          opt.lr = 0.02;
          opt.weight_decay = wd;
          const at::Tensor w0 = at::randn({c.m, c.n});
          at::Tensor fused = w0.clone(), ref = w0.clone();
          ASSERT_TRUE(ns_result_fused_supported(fused, result));
          muon_apply_update(fused, result, opt, "w");
          muon_apply_update_reference(ref, result, opt, "w");
          EXPECT_TRUE(at::equal(fused, ref));
          EXPECT_FALSE(at::equal(fused, w0));  // the update did something
        }
        at::Tensor copied = at::full({c.m, c.n}, 7.0f);
        copy_ns_result(copied, result);
        EXPECT_TRUE(at::equal(copied, result.to(at::kFloat)));
      }
    }
  }
  at::set_num_threads(saved);
  // Not taken, and the reference used instead: a float64 parameter, a non-contiguous one, a result
  // whose strides are neither contiguous nor a plain transpose.
  const at::Tensor r = at::randn({24, 40});
  EXPECT_FALSE(ns_result_fused_supported(at::zeros({24, 40}, at::kDouble), r));
  EXPECT_FALSE(ns_result_fused_supported(at::zeros({40, 24}).t(), r));
  const at::Tensor strided = at::randn({40, 48}).narrow(1, 0, 24).t();  // [24, 40], strides (1, 48)
  EXPECT_FALSE(ns_result_fused_supported(at::zeros({24, 40}), strided));
  MuonOptions opt;
  opt.weight_decay = 0.1;
  at::Tensor w = at::randn({24, 40}), w_ref = w.clone();
  muon_apply_update(w, strided, opt, "w");
  muon_apply_update_reference(w_ref, strided, opt, "w");
  EXPECT_TRUE(at::equal(w, w_ref));
}

TEST(Muon, ReferenceDistinguishesTheVariants) {
  // The reference itself must react to each option, or the equality above could hold for an ignored option.
  at::manual_seed(5);
  const at::Tensor w0 = at::randn({48, 112});
  std::vector<at::Tensor> grads;
  for (int t = 0; t < 10; ++t) grads.push_back(at::randn({48, 112}));
  auto run = [&](const Reference& r) {
    at::Tensor w = w0.clone();
    at::Tensor m = at::zeros_like(w0);
    reference_steps(w, m, grads, r);
    return std::make_pair(w, m);
  };
  const auto base = run(Reference{});
  for (const MuonCase& c : muon_cases()) {
    if (c.name == "defaults" || c.name == "scale_original") continue;
    SCOPED_TRACE(c.name);
    const auto other = run(c.reference);
    EXPECT_GT(std::max(max_abs_diff(other.first, base.first), max_abs_diff(other.second, base.second)), 1e-4);
  }
}

// ---------------------------------------------------------------------------------------------------------------

TEST(Muon, ExpertStackEqualsSeparateMatrices) {
  at::manual_seed(31);
  const int64_t experts = 3, m = 40, n = 24;  // tall: the 'original' scale sqrt(m/n) depends on the per-expert shape
  MuonOptions opt;
  opt.weight_decay = 0.1;
  const at::Tensor w0 = at::randn({experts, m, n});
  at::Tensor w = w0.clone();
  at::Tensor mom = at::zeros_like(w);
  std::vector<at::Tensor> ws, moms;
  for (int64_t e = 0; e < experts; ++e) {
    ws.push_back(w0[e].clone());
    moms.push_back(at::zeros({m, n}));
  }
  for (int t = 0; t < 5; ++t) {
    // Very different scales per expert: each expert must be normalized on its own.
    const at::Tensor g = at::randn({experts, m, n}) * at::tensor({1.0f, 100.0f, 0.01f}).view({-1, 1, 1});
    muon_step(w, g, mom, opt, "experts");
    for (int64_t e = 0; e < experts; ++e) muon_step(ws[e], g[e].contiguous(), moms[e], opt, "expert");
  }
  for (int64_t e = 0; e < experts; ++e) {
    SCOPED_TRACE("expert " + std::to_string(e));
    // bmm over the stack versus one matrix at a time may round differently in the last bit.
    EXPECT_LE(max_abs_diff(w[e], ws[e]), 1e-6);
    EXPECT_LE(max_abs_diff(mom[e], moms[e]), 1e-6);
  }
  EXPECT_GT(max_abs_diff(w, w0), 1e-3);
}

TEST(Muon, ConvFilterEqualsFlattenedMatrix) {
  at::manual_seed(32);
  const std::vector<int64_t> shape = {64, 4, 3, 3};  // viewed as (64, 36): tall, scale sqrt(64/36)
  MuonOptions opt;
  opt.weight_decay = 0.05;
  const at::Tensor w0 = at::randn(shape);
  at::Tensor w4 = w0.clone();
  at::Tensor m4 = at::zeros_like(w4);
  at::Tensor w2 = w0.reshape({64, -1}).clone();
  at::Tensor m2 = at::zeros_like(w2);
  for (int t = 0; t < 5; ++t) {
    const at::Tensor g = at::randn(shape);
    muon_step(w4, g, m4, opt, "conv");
    muon_step(w2, g.reshape({64, -1}), m2, opt, "flat");
  }
  ASSERT_EQ(w4.sizes(), at::IntArrayRef(shape));
  ASSERT_EQ(m4.sizes(), at::IntArrayRef(shape));
  EXPECT_TRUE(at::equal(w4.reshape({64, -1}), w2)) << max_abs_diff(w4.reshape({64, -1}), w2);
  EXPECT_TRUE(at::equal(m4.reshape({64, -1}), m2));
  EXPECT_GT(max_abs_diff(w4, w0), 1e-3);
}

TEST(Muon, MatrixView) {
  EXPECT_EQ(muon_matrix_view(at::zeros({5, 7}), "a").sizes(), (std::vector<int64_t>{1, 5, 7}));
  EXPECT_EQ(muon_matrix_view(at::zeros({3, 5, 7}), "b").sizes(), (std::vector<int64_t>{3, 5, 7}));
  EXPECT_EQ(muon_matrix_view(at::zeros({8, 2, 3, 3}), "c").sizes(), (std::vector<int64_t>{1, 8, 18}));
  const at::Tensor t = at::zeros({8, 2, 3, 3});
  EXPECT_EQ(muon_matrix_view(t, "c").data_ptr(), t.data_ptr());  // a view, not a copy
}

// ---------------------------------------------------------------------------------------------------------------

TEST(Muon, ScaleValues) {
  MuonOptions o;
  o.scale_mode = ScaleMode::kOriginal;
  EXPECT_DOUBLE_EQ(muon_scale(1024, 256, o), 2.0);
  EXPECT_DOUBLE_EQ(muon_scale(256, 1024, o), 1.0);
  EXPECT_DOUBLE_EQ(muon_scale(300, 300, o), 1.0);
  EXPECT_DOUBLE_EQ(muon_scale(1000, 10, o), 10.0);
  o.scale_mode = ScaleMode::kMatchRmsAdamW;
  EXPECT_DOUBLE_EQ(muon_scale(1024, 256, o), 0.2 * 32.0);
  EXPECT_DOUBLE_EQ(muon_scale(256, 1024, o), 0.2 * 32.0);
  EXPECT_DOUBLE_EQ(muon_scale(100, 100, o), 2.0);
  o.scale_mode = ScaleMode::kSpectral;
  o.spectral_factor = 1.5;
  EXPECT_DOUBLE_EQ(muon_scale(1024, 256, o), 48.0);
  EXPECT_DOUBLE_EQ(muon_scale(256, 1024, o), 48.0);
  o.spectral_factor = 1.0;
  EXPECT_DOUBLE_EQ(muon_scale(64, 16, o), 8.0);
}

TEST(Muon, ParseAndToString) {
  for (const ScaleMode s : {ScaleMode::kOriginal, ScaleMode::kMatchRmsAdamW, ScaleMode::kSpectral}) {
    EXPECT_EQ(parse_scale_mode(to_string(s)), s);
  }
  EXPECT_EQ(to_string(ScaleMode::kMatchRmsAdamW), "match_rms_adamw");
  for (const MomentumForm f : {MomentumForm::kEma, MomentumForm::kSum}) EXPECT_EQ(parse_momentum_form(to_string(f)), f);
  EXPECT_EQ(to_string(MomentumForm::kSum), "sum");

  EXPECT_THROW(parse_scale_mode("bogus"), InvalidArgument);
  std::string msg = thrown_message<InvalidArgument>([] { parse_scale_mode("bogus"); });
  EXPECT_TRUE(contains(msg, "'bogus'")) << msg;
  for (const char* valid : {"original", "match_rms_adamw", "spectral"}) EXPECT_TRUE(contains(msg, valid)) << msg;

  EXPECT_THROW(parse_momentum_form("bogus"), InvalidArgument);
  msg = thrown_message<InvalidArgument>([] { parse_momentum_form("bogus"); });
  EXPECT_TRUE(contains(msg, "'bogus'")) << msg;
  EXPECT_TRUE(contains(msg, "ema")) << msg;
  EXPECT_TRUE(contains(msg, "sum")) << msg;
  EXPECT_THROW(parse_momentum_form("EMA"), InvalidArgument);
}

struct ValidateCase {
  const char* field;
  void (*mutate)(MuonOptions&);
};

TEST(Muon, ValidateNamesTheBadField) {
  EXPECT_NO_THROW(MuonOptions{}.validate());
  const std::vector<ValidateCase> cases = {
      {"'lr'", [](MuonOptions& o) { o.lr = -0.01; }},
      {"'lr'", [](MuonOptions& o) { o.lr = std::numeric_limits<double>::quiet_NaN(); }},
      {"'momentum'", [](MuonOptions& o) { o.momentum = 1.0; }},
      {"'momentum'", [](MuonOptions& o) { o.momentum = -0.1; }},
      {"'momentum'", [](MuonOptions& o) { o.momentum = std::numeric_limits<double>::quiet_NaN(); }},
      {"'weight_decay'", [](MuonOptions& o) { o.weight_decay = -0.2; }},
      {"'spectral_factor'", [](MuonOptions& o) { o.spectral_factor = 0.0; }},
      {"'spectral_factor'", [](MuonOptions& o) { o.spectral_factor = -1.0; }},
      {"steps", [](MuonOptions& o) { o.ns.steps = 0; }},
  };
  for (const ValidateCase& vc : cases) {
    SCOPED_TRACE(vc.field);
    MuonOptions o;
    vc.mutate(o);
    EXPECT_THROW(o.validate(), InvalidArgument);
    const std::string msg = thrown_message<InvalidArgument>([&] { o.validate(); });
    EXPECT_TRUE(contains(msg, vc.field)) << msg;
  }
  // Boundary values that are valid.
  MuonOptions ok;
  ok.lr = 0.0;
  ok.momentum = 0.0;
  ok.weight_decay = 0.0;
  ok.ns.steps = 1;
  EXPECT_NO_THROW(ok.validate());
}

TEST(Muon, ShapeErrors) {
  const MuonOptions opt;
  // A 1-D parameter belongs to AdamW.
  at::Tensor bias = at::randn({16});
  at::Tensor bias_m = at::zeros({16});
  EXPECT_THROW(muon_step(bias, at::randn({16}), bias_m, opt, "layer.bias"), ShapeError);
  std::string msg = thrown_message<ShapeError>([&] { muon_step(bias, at::randn({16}), bias_m, opt, "layer.bias"); });
  EXPECT_TRUE(contains(msg, "layer.bias")) << msg;
  EXPECT_TRUE(contains(msg, "AdamW")) << msg;
  at::Tensor scalar = at::randn({});
  at::Tensor scalar_m = at::zeros({});
  EXPECT_THROW(muon_step(scalar, at::randn({}), scalar_m, opt, "s"), ShapeError);

  // Gradient shape differs from the parameter's: nothing is touched.
  at::Tensor w = at::randn({8, 12});
  at::Tensor m = at::randn({8, 12});
  const at::Tensor w_before = w.clone(), m_before = m.clone();
  for (const auto& gshape : std::vector<std::vector<int64_t>>{{12, 8}, {8, 13}, {96}, {1, 8, 12}}) {
    SCOPED_TRACE(c10::str(at::IntArrayRef(gshape)));
    EXPECT_THROW(muon_step(w, at::randn(gshape), m, opt, "blocks.0.w"), ShapeError);
    msg = thrown_message<ShapeError>([&] { muon_step(w, at::randn(gshape), m, opt, "blocks.0.w"); });
    EXPECT_TRUE(contains(msg, "blocks.0.w")) << msg;
    EXPECT_TRUE(contains(msg, "gradient shape")) << msg;
  }
  EXPECT_TRUE(at::equal(w, w_before));
  EXPECT_TRUE(at::equal(m, m_before));
}

}  // namespace
}  // namespace orthotron
