// test_adamw.cpp: tests of the single-tensor AdamW update (optim/adamw.h): bitwise equality with
// torch::optim::AdamW over 20 steps for several hyperparameter sets and shapes, flat-buffer views,
// the step counter and state, and options validation.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "base/errors.h"
#include "base/intra_op_threads.h"
#include "optim/adamw.h"
#include "test_util.h"

namespace orthotron {
namespace {

using orthotron::testing::contains;
using orthotron::testing::thrown_message;

struct HyperCase {
  std::string name;
  AdamWOptions options;
};

void PrintTo(const HyperCase& h, std::ostream* os) {
  *os << h.name;
}

std::vector<HyperCase> hyper_cases() {
  std::vector<HyperCase> cases;
  cases.push_back({"defaults", AdamWOptions{}});
  AdamWOptions llm;
  llm.lr = 3e-4;
  llm.beta1 = 0.9;
  llm.beta2 = 0.95;
  llm.eps = 1e-10;
  llm.weight_decay = 0.1;
  cases.push_back({"lr3e-4_betas_0_9_0_95_eps1e-10_wd0_1", llm});
  AdamWOptions no_wd;
  no_wd.weight_decay = 0.0;
  cases.push_back({"wd0", no_wd});
  AdamWOptions big;
  big.lr = 0.05;
  big.beta1 = 0.5;
  big.beta2 = 0.9;
  big.eps = 1e-6;
  big.weight_decay = 0.5;
  cases.push_back({"lr0_05_betas_0_5_0_9_eps1e-6_wd0_5", big});
  return cases;
}

torch::optim::AdamWOptions to_torch(const AdamWOptions& o) {
  torch::optim::AdamWOptions t(o.lr);
  t.betas(std::make_tuple(o.beta1, o.beta2)).eps(o.eps).weight_decay(o.weight_decay).amsgrad(false);
  return t;
}

const torch::optim::AdamWParamState& torch_state(torch::optim::AdamW& opt, const at::Tensor& p) {
  return static_cast<const torch::optim::AdamWParamState&>(*opt.state().at(p.unsafeGetTensorImpl()));
}

using Shape = std::vector<int64_t>;

class AdamWEqualsTorch : public ::testing::TestWithParam<std::tuple<HyperCase, Shape, at::ScalarType>> {};

TEST_P(AdamWEqualsTorch, TwentyStepsBitwise) {
  const auto& [hc, shape, dtype] = GetParam();
  ASSERT_NO_THROW(hc.options.validate());
  AdamWOptions options = hc.options;
  options.kernel = AdamWKernel::kReference;
  at::manual_seed(99);
  const at::Tensor p0 = at::randn(shape, dtype);
  std::vector<at::Tensor> grads;
  for (int t = 0; t < 20; ++t) grads.push_back(at::randn(shape, dtype) * (t % 3 == 0 ? 10.0 : 0.1));

  at::Tensor torch_param = p0.clone().requires_grad_(true);
  torch::optim::AdamW torch_opt({torch_param}, to_torch(hc.options));

  at::Tensor param = p0.clone();
  AdamWState state;
  for (int t = 0; t < 20; ++t) {
    torch_param.mutable_grad() = grads[static_cast<size_t>(t)].clone();
    torch_opt.step();
    adamw_step(param, grads[static_cast<size_t>(t)], state, options);
    ASSERT_EQ(state.step, t + 1);
    const auto& ts = torch_state(torch_opt, torch_param);
    ASSERT_EQ(ts.step(), state.step);
    ASSERT_TRUE(at::equal(param, torch_param.detach())) << "step " << t + 1;
    ASSERT_TRUE(at::equal(state.exp_avg, ts.exp_avg())) << "step " << t + 1;
    ASSERT_TRUE(at::equal(state.exp_avg_sq, ts.exp_avg_sq())) << "step " << t + 1;
  }
  EXPECT_EQ(param.sizes(), at::IntArrayRef(shape));
  EXPECT_EQ(param.scalar_type(), dtype);
  EXPECT_FALSE(at::equal(param, p0));
}

INSTANTIATE_TEST_SUITE_P(Cases, AdamWEqualsTorch,
                         ::testing::Combine(::testing::ValuesIn(hyper_cases()),
                                            ::testing::Values(Shape{1}, Shape{37}, Shape{16, 24}, Shape{3, 5, 7},
                                                              Shape{257, 129}),
                                            ::testing::Values(at::kFloat, at::kDouble)),
                         [](const ::testing::TestParamInfo<std::tuple<HyperCase, Shape, at::ScalarType>>& param_info) {
                           std::string name = std::get<0>(param_info.param).name + "_";
                           for (const int64_t d : std::get<1>(param_info.param)) name += std::to_string(d) + "x";
                           name.back() = '_';
                           name += c10::toString(std::get<2>(param_info.param));
                           for (char& ch : name) {
                             if (ch == '-' || ch == '.') ch = '_';
                           }
                           return name;
                         });

// The fused kernel against the reference, step by step: the same formula, but the reference's ATen
// kernels fuse some multiply-adds, so the bits may differ. The bound: 1e-6 of the largest magnitude
// in each tensor (a few float32 ulp), checked every step for 20 steps.
class AdamWFusedNearReference : public ::testing::TestWithParam<std::tuple<HyperCase, Shape>> {};

TEST_P(AdamWFusedNearReference, TwentySteps) {
  const auto& [hc, shape] = GetParam();
  AdamWOptions fused = hc.options, reference = hc.options;
  fused.kernel = AdamWKernel::kFused;
  reference.kernel = AdamWKernel::kReference;
  at::manual_seed(98);
  at::Tensor pf = at::randn(shape), pr = pf.clone();
  AdamWState sf, sr;
  double worst = 0;
  for (int t = 0; t < 20; ++t) {
    const at::Tensor g = at::randn(shape) * (t % 3 == 0 ? 10.0 : 0.1);
    adamw_step(pf, g, sf, fused);
    adamw_step(pr, g, sr, reference);
    ASSERT_EQ(sf.step, sr.step);
    for (const auto& [a, b] : {std::pair{pf, pr}, {sf.exp_avg, sr.exp_avg}, {sf.exp_avg_sq, sr.exp_avg_sq}}) {
      const double scale = std::max(b.abs().max().item<double>(), 1e-30);
      const double rel = orthotron::testing::max_abs_diff(a, b) / scale;
      worst = std::max(worst, rel);
      ASSERT_LE(rel, 1e-6) << "step " << t + 1;
    }
  }
  ::testing::Test::RecordProperty("max_relative_difference", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(Cases, AdamWFusedNearReference,
                         ::testing::Combine(::testing::ValuesIn(hyper_cases()),
                                            ::testing::Values(Shape{1}, Shape{37}, Shape{3, 5, 7}, Shape{257, 129},
                                                              Shape{300001})),
                         [](const ::testing::TestParamInfo<std::tuple<HyperCase, Shape>>& param_info) {
                           std::string name = std::get<0>(param_info.param).name + "_";
                           for (const int64_t d : std::get<1>(param_info.param)) name += std::to_string(d) + "x";
                           name.pop_back();
                           for (char& ch : name) {
                             if (ch == '-' || ch == '.') ch = '_';
                           }
                           return name;
                         });

// The fused kernel is element-wise and contraction-free: a slice of a flat buffer gets the same bits
// as the whole, at any thread count (what keeps the distributed ZeRO-1 AdamW bitwise equal to the
// single-process one), and it falls back to the reference for what it cannot take.
TEST(AdamWFused, SlicesAndThreadCountsGiveTheSameBits) {
  at::manual_seed(5);
  const int64_t n = 200003;  // several parallel chunks, odd tail
  const at::Tensor p0 = at::randn({n});
  const at::Tensor g = at::randn({n});
  const AdamWOptions opt;
  ASSERT_EQ(opt.kernel, AdamWKernel::kFused) << "fused is the default";
  auto run_whole = [&](int threads) {
    const int saved = at::get_num_threads();
    at::set_num_threads(threads);
    at::Tensor p = p0.clone();
    AdamWState st;
    for (int t = 0; t < 3; ++t) adamw_step(p, g, st, opt);
    at::set_num_threads(saved);
    return p;
  };
  const at::Tensor whole1 = run_whole(1), whole2 = run_whole(2);
  EXPECT_TRUE(at::equal(whole1, whole2)) << "1 vs 2 threads";
  at::Tensor sliced = p0.clone();
  const int64_t cuts[] = {0, 7, 100000, 150001, n};
  for (int c = 0; c + 1 < 5; ++c) {
    at::Tensor view = sliced.narrow(0, cuts[c], cuts[c + 1] - cuts[c]);
    const at::Tensor gv = g.narrow(0, cuts[c], cuts[c + 1] - cuts[c]);
    AdamWState st;
    for (int t = 0; t < 3; ++t) adamw_step(view, gv, st, opt);
  }
  EXPECT_TRUE(at::equal(sliced, whole1)) << "slices vs the whole";
  // Float64 and non-contiguous tensors take the reference path: bitwise equal to it.
  at::Tensor pd = p0.to(at::kDouble), pd_ref = pd.clone();
  AdamWState sd, sd_ref;
  AdamWOptions ref = opt;
  ref.kernel = AdamWKernel::kReference;
  adamw_step(pd, g.to(at::kDouble), sd, opt);
  adamw_step(pd_ref, g.to(at::kDouble), sd_ref, ref);
  EXPECT_TRUE(at::equal(pd, pd_ref));
}

// at::parallel_for runs in parallel only in files compiled with OpenMP (base/intra_op_threads.h);
// the fused kernel and the matrix-parallel Newton-Schulz rely on it.
TEST(IntraOpThreads, ParallelForInOurLibrariesReachesEveryThread) {
  const int saved = at::get_num_threads();
  at::set_num_threads(2);
  EXPECT_EQ(intra_op_threads_reached(), 2) << "orthotron was compiled without OpenMP: parallel_for runs serially";
  at::set_num_threads(1);
  EXPECT_EQ(intra_op_threads_reached(), 1);
  at::set_num_threads(saved);
}

TEST(AdamW, DefaultsMatchTorch) {
  const AdamWOptions o;
  const torch::optim::AdamWOptions t;
  EXPECT_EQ(o.lr, t.lr());
  EXPECT_EQ(o.beta1, std::get<0>(t.betas()));
  EXPECT_EQ(o.beta2, std::get<1>(t.betas()));
  EXPECT_EQ(o.eps, t.eps());
  EXPECT_EQ(o.weight_decay, t.weight_decay());
}

TEST(AdamW, ViewIntoFlatBufferUpdatesOnlyItsSlice) {
  at::manual_seed(7);
  AdamWOptions opt;
  opt.kernel = AdamWKernel::kReference;  // compared with torch bit for bit
  const at::Tensor flat0 = at::randn({100});
  at::Tensor flat = flat0.clone();
  at::Tensor view = flat.narrow(0, 10, 45).view({5, 9});
  at::Tensor torch_param = flat0.narrow(0, 10, 45).view({5, 9}).clone().requires_grad_(true);
  torch::optim::AdamW torch_opt({torch_param}, to_torch(opt));
  AdamWState state;
  for (int t = 0; t < 20; ++t) {
    const at::Tensor g = at::randn({5, 9});
    torch_param.mutable_grad() = g.clone();
    torch_opt.step();
    adamw_step(view, g, state, opt);
  }
  EXPECT_EQ(view.data_ptr(), flat.narrow(0, 10, 45).data_ptr());  // still a view: updated in place
  EXPECT_TRUE(at::equal(flat.narrow(0, 10, 45).view({5, 9}), torch_param.detach()));
  EXPECT_TRUE(at::equal(flat.narrow(0, 0, 10), flat0.narrow(0, 0, 10)));
  EXPECT_TRUE(at::equal(flat.narrow(0, 55, 45), flat0.narrow(0, 55, 45)));
  EXPECT_EQ(state.exp_avg.sizes(), (std::vector<int64_t>{5, 9}));
}

TEST(AdamW, StateIsCreatedOnFirstStepAndTheCounterAdvances) {
  at::Tensor p = at::ones({4, 3});
  AdamWState state;
  EXPECT_FALSE(state.exp_avg.defined());
  EXPECT_EQ(state.step, 0);
  const at::Tensor g = at::full({4, 3}, 0.5);
  adamw_step(p, g, state, AdamWOptions{});
  ASSERT_TRUE(state.exp_avg.defined());
  ASSERT_TRUE(state.exp_avg_sq.defined());
  EXPECT_EQ(state.step, 1);
  EXPECT_EQ(state.exp_avg.sizes(), p.sizes());
  EXPECT_EQ(state.exp_avg.scalar_type(), p.scalar_type());
  // First step: m = 0.1 g, v = 0.001 g^2; the bias-corrected step is lr * sign(g) (up to eps).
  EXPECT_TRUE(at::allclose(state.exp_avg, at::full({4, 3}, 0.05)));
  EXPECT_TRUE(at::allclose(state.exp_avg_sq, at::full({4, 3}, 0.00025)));
  EXPECT_TRUE(at::allclose(p, at::full({4, 3}, 1.0 * (1 - 1e-3 * 0.01) - 1e-3), 1e-6, 1e-7));
  for (int t = 2; t <= 5; ++t) {
    adamw_step(p, g, state, AdamWOptions{});
    EXPECT_EQ(state.step, t);
  }
  // A state restored at step 5 continues from there (bias correction uses the stored count).
  AdamWState copy{state.exp_avg.clone(), state.exp_avg_sq.clone(), state.step};
  at::Tensor p_copy = p.clone();
  adamw_step(p, g, state, AdamWOptions{});
  adamw_step(p_copy, g, copy, AdamWOptions{});
  EXPECT_TRUE(at::equal(p, p_copy));
  EXPECT_EQ(copy.step, 6);
  // Whereas a state whose counter was reset applies a different bias correction.
  AdamWState reset{copy.exp_avg.clone(), copy.exp_avg_sq.clone(), 0};
  at::Tensor p_reset = p_copy.clone();
  adamw_step(p_copy, g, copy, AdamWOptions{});
  adamw_step(p_reset, g, reset, AdamWOptions{});
  EXPECT_FALSE(at::equal(p_copy, p_reset));
}

struct ValidateCase {
  const char* field;
  void (*mutate)(AdamWOptions&);
};

TEST(AdamW, ValidateNamesTheBadField) {
  EXPECT_NO_THROW(AdamWOptions{}.validate());
  const std::vector<ValidateCase> cases = {
      {"'lr'", [](AdamWOptions& o) { o.lr = -1e-3; }},
      {"'lr'", [](AdamWOptions& o) { o.lr = std::numeric_limits<double>::infinity(); }},
      {"'betas[0]'", [](AdamWOptions& o) { o.beta1 = 1.0; }},
      {"'betas[0]'", [](AdamWOptions& o) { o.beta1 = -0.1; }},
      {"'betas[1]'", [](AdamWOptions& o) { o.beta2 = 1.5; }},
      {"'betas[1]'", [](AdamWOptions& o) { o.beta2 = std::numeric_limits<double>::quiet_NaN(); }},
      {"'eps'", [](AdamWOptions& o) { o.eps = 0.0; }},
      {"'eps'", [](AdamWOptions& o) { o.eps = -1e-8; }},
      {"'weight_decay'", [](AdamWOptions& o) { o.weight_decay = -0.01; }},
  };
  for (const ValidateCase& vc : cases) {
    SCOPED_TRACE(vc.field);
    AdamWOptions o;
    vc.mutate(o);
    EXPECT_THROW(o.validate(), InvalidArgument);
    const std::string msg = thrown_message<InvalidArgument>([&] { o.validate(); });
    EXPECT_TRUE(contains(msg, vc.field)) << msg;
  }
  AdamWOptions edge;
  edge.lr = 0.0;
  edge.beta1 = 0.0;
  edge.beta2 = 0.0;
  edge.weight_decay = 0.0;
  EXPECT_NO_THROW(edge.validate());
}

TEST(AdamW, GradientOrStateOfAnotherShapeIsAShapeError) {
  at::Tensor p = at::zeros({4, 3});
  AdamWState st;
  EXPECT_THROW(adamw_step(p, at::ones({3}), st, AdamWOptions{}), ShapeError);  // would broadcast silently
  EXPECT_THROW(adamw_step(p, at::ones({}), st, AdamWOptions{}), ShapeError);
  EXPECT_TRUE(at::equal(p, at::zeros({4, 3}))) << "a rejected step must not touch the parameter";
  st.exp_avg = at::zeros({12});
  st.exp_avg_sq = at::zeros({12});
  EXPECT_THROW(adamw_step(p, at::ones({4, 3}), st, AdamWOptions{}), ShapeError);
}

// Moments are placed a quarter and a half page past the parameter (adamw.h says why); the
// placement changes addresses only: zeros, the parameter's shape, contiguous, and a fused step on
// them gives the bits a step on plainly allocated moments gives.
TEST(AdamWState, MomentsAreStaggeredAgainstTheParameter) {
  auto page_offset = [](const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 4096; };
  at::manual_seed(11);
  const at::Tensor flat = at::randn({3 * 65536 + 5});
  for (const at::Tensor& p :
       {at::randn({256, 513}), flat.narrow(0, 3, 65536 + 1).view({65537}), at::randn({32768}, at::kDouble)}) {
    SCOPED_TRACE(c10::str(p.sizes(), " ", p.scalar_type()));
    const AdamWState st = adamw_state_for(p);
    for (const at::Tensor* m : {&st.exp_avg, &st.exp_avg_sq}) {
      EXPECT_EQ(m->sizes(), p.sizes());
      EXPECT_EQ(m->scalar_type(), p.scalar_type());
      EXPECT_TRUE(m->is_contiguous());
      EXPECT_EQ(m->count_nonzero().item<int64_t>(), 0);
    }
    EXPECT_EQ(page_offset(st.exp_avg), (page_offset(p) + 1024) % 4096);
    EXPECT_EQ(page_offset(st.exp_avg_sq), (page_offset(p) + 2048) % 4096);
    EXPECT_EQ(page_offset(zeros_at_page_offset(p, 0)), page_offset(p));
    EXPECT_EQ(page_offset(zeros_at_page_offset(p, 4088)), (page_offset(p) + 4088) % 4096);
    // The two moments are distinct storage: writing one leaves the other zero.
    st.exp_avg.fill_(1.0);
    EXPECT_EQ(st.exp_avg_sq.count_nonzero().item<int64_t>(), 0);
  }
  // Small (under 64 KiB) and non-contiguous tensors get plain zeros of their shape.
  const at::Tensor small = at::randn({100, 3});
  const at::Tensor strided = at::randn({512, 512}).t();
  for (const at::Tensor& p : {small, strided}) {
    const at::Tensor z = zeros_at_page_offset(p, 1024);
    EXPECT_EQ(z.sizes(), p.sizes());
    EXPECT_EQ(z.strides(), p.strides()) << "zeros_like keeps the parameter's layout";
    EXPECT_EQ(z.count_nonzero().item<int64_t>(), 0);
  }
  EXPECT_THROW(zeros_at_page_offset(small, 4096), InvalidArgument);
  EXPECT_THROW(zeros_at_page_offset(small, -1), InvalidArgument);
  const std::string msg = thrown_message<InvalidArgument>([&] { zeros_at_page_offset(small, 5000); });
  EXPECT_TRUE(contains(msg, "5000")) << msg;
}

TEST(AdamWState, PlacementDoesNotChangeTheBitsAndRestoreKeepsIt) {
  at::manual_seed(12);
  const at::Tensor p0 = at::randn({300, 257});
  const at::Tensor g = at::randn({300, 257});
  at::Tensor p_staggered = p0.clone(), p_plain = p0.clone();
  AdamWState staggered;  // created by adamw_step: adamw_state_for
  AdamWState plain{at::zeros({300, 257}), at::zeros({300, 257}), 0};
  for (int t = 0; t < 4; ++t) {
    adamw_step(p_staggered, g * (t + 1), staggered, AdamWOptions{});
    adamw_step(p_plain, g * (t + 1), plain, AdamWOptions{});
  }
  EXPECT_TRUE(at::equal(p_staggered, p_plain));
  EXPECT_TRUE(at::equal(staggered.exp_avg, plain.exp_avg));
  EXPECT_TRUE(at::equal(staggered.exp_avg_sq, plain.exp_avg_sq));
  EXPECT_EQ((reinterpret_cast<uintptr_t>(staggered.exp_avg.data_ptr()) -
             reinterpret_cast<uintptr_t>(p_staggered.data_ptr())) %
                4096,
            1024u);
  // Restoring plainly allocated moments (as a checkpoint loads them) copies them into staggered ones.
  AdamWState restored;
  restored.step = plain.step;
  adamw_restore_moments(p_staggered, plain.exp_avg, plain.exp_avg_sq, restored);
  EXPECT_TRUE(at::equal(restored.exp_avg, plain.exp_avg));
  EXPECT_TRUE(at::equal(restored.exp_avg_sq, plain.exp_avg_sq));
  EXPECT_NE(restored.exp_avg.data_ptr(), plain.exp_avg.data_ptr()) << "a copy, not the loaded tensor";
  EXPECT_EQ((reinterpret_cast<uintptr_t>(restored.exp_avg_sq.data_ptr()) -
             reinterpret_cast<uintptr_t>(p_staggered.data_ptr())) %
                4096,
            2048u);
  adamw_step(p_staggered, g, restored, AdamWOptions{});
  adamw_step(p_plain, g, plain, AdamWOptions{});
  EXPECT_TRUE(at::equal(p_staggered, p_plain));
  // Moments of another shape are copied as they are (adamw_step then names the mismatch).
  AdamWState odd;
  adamw_restore_moments(p_plain, at::ones({7}), at::ones({7}), odd);
  EXPECT_EQ(odd.exp_avg.sizes(), (std::vector<int64_t>{7}));
  EXPECT_THROW(adamw_step(p_plain, g, odd, AdamWOptions{}), ShapeError);
}

}  // namespace
}  // namespace orthotron
