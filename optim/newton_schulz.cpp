// newton_schulz.cpp: the batched fast path and the one-matrix reference of Newton-Schulz.
#include "optim/newton_schulz.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "base/errors.h"
#include "optim/symmetric_product.h"
#include "optim/update_fused.h"

namespace orthotron {

const NsCoefficients& NsSchedule::at_step(int k) const {
  const size_t i = std::min(static_cast<size_t>(k), coefficients.size() - 1);
  return coefficients[i];
}

const std::vector<std::string>& ns_schedule_names() {
  static const std::vector<std::string> names = {"quintic", "quintic_per_step", "polar_express"};
  return names;
}

NsSchedule ns_schedule_by_name(const std::string& name) {
  NsSchedule s;
  s.name = name;
  if (name == "quintic") {
    s.coefficients = {{3.4445, -4.7750, 2.0315}};
  } else if (name == "quintic_per_step") {
    s.coefficients = {{4.0848, -6.8946, 2.9270},
                      {3.9505, -6.3029, 2.6377},
                      {3.7418, -5.5913, 2.3037},
                      {2.8769, -3.1427, 1.2046},
                      {2.8366, -3.0525, 1.2012}};
  } else if (name == "polar_express") {
    s.coefficients = {{8.156554524902461, -22.48329292557795, 15.878769915207462},
                      {4.042929935166739, -2.808917465908714, 0.5000178451051316},
                      {3.8916678022926607, -2.772484153217685, 0.5060648178503393},
                      {3.285753657755655, -2.3681294933425376, 0.46449024233003106},
                      {2.3465413258596377, -1.7097828382687081, 0.42323551169305323}};
    s.norm_scale = 1.02;
    s.eps = 1e-6;
  } else {
    std::ostringstream msg;
    msg << "unknown Newton-Schulz schedule '" << name << "'; expected one of:";
    for (const auto& n : ns_schedule_names()) msg << " " << n;
    msg << " (or 'custom' with a coefficient list)";
    throw InvalidArgument(msg.str());
  }
  return s;
}

NsSchedule ns_custom_schedule(std::vector<NsCoefficients> coefficients, double eps) {
  if (coefficients.empty()) throw InvalidArgument("custom Newton-Schulz schedule: coefficient list is empty");
  for (size_t i = 0; i < coefficients.size(); ++i) {
    for (double v : coefficients[i]) {
      if (!std::isfinite(v)) {
        throw InvalidArgument("custom Newton-Schulz schedule: step " + std::to_string(i) +
                              " holds a non-finite coefficient");
      }
    }
  }
  if (!(eps > 0) || !std::isfinite(eps)) {
    throw InvalidArgument("Newton-Schulz eps must be a finite value > 0, got " + std::to_string(eps));
  }
  NsSchedule s;
  s.name = "custom";
  s.coefficients = std::move(coefficients);
  s.eps = eps;
  return s;
}

void check_ns_schedule_stable(const NsSchedule& schedule, int steps) {
  constexpr int kPoints = 2048;
  for (int i = 0; i <= kPoints; ++i) {
    const double x0 = static_cast<double>(i) / kPoints;
    double x = x0;
    for (int k = 0; k < steps; ++k) {
      const auto& c = schedule.at_step(k);
      const double x2 = x * x;
      x = c[0] * x + c[1] * x2 * x + c[2] * x2 * x2 * x;
      if (!std::isfinite(x) || std::abs(x) > kNsStableBound) {
        std::ostringstream msg;
        msg << "Newton-Schulz schedule '" << schedule.name << "' diverges: after step " << k + 1 << " of " << steps
            << " a singular value " << x0 << " of the normalized input becomes " << x << " (the limit is "
            << kNsStableBound << "); check ns_coefficients";
        throw InvalidArgument(msg.str());
      }
    }
  }
}

double newton_schulz_flops(int64_t m, int64_t n, int steps) {
  const double s = static_cast<double>(std::min(m, n));
  const double l = static_cast<double>(std::max(m, n));
  return steps * (4.0 * s * s * l + 2.0 * s * s * s);
}

double newton_schulz_gram_flops(int64_t m, int64_t n, int steps, int restart) {
  const double s = static_cast<double>(std::min(m, n));
  const double l = static_cast<double>(std::max(m, n));
  const double rect = 2.0 * s * s * l, square = 2.0 * s * s * s;
  double flops = 2 * rect;  // G = X0 X0^T, and X = Q X0 at the end
  bool fresh = true;        // Q is the identity: the first P Q is free
  for (int k = 0; k < steps; ++k) {
    const bool restart_next = restart > 0 && k + 1 < steps && (k + 1) % restart == 0;
    flops += square;                                          // G^2
    if (!fresh) flops += square;                              // Q <- P Q
    if (k + 1 < steps && !restart_next) flops += 2 * square;  // G <- (P G) P
    fresh = false;
    if (restart_next) {
      flops += 2 * rect;  // X = Q X, G = X X^T
      fresh = true;
    }
  }
  return flops;
}

bool ns_uses_gram(int64_t m, int64_t n, const NsOptions& options) {
  switch (options.gram) {
    case NsGram::kOff:
      return false;
    case NsGram::kOn:
      return true;
    case NsGram::kAuto:
      break;
  }
  return newton_schulz_gram_flops(m, n, options.steps, options.gram_restart) <=
         kNsGramAutoRatio * newton_schulz_flops(m, n, options.steps);
}

namespace {

/// The [s, s] products of an iteration: full at::mm/addmm (blocks == 1), or, under ns_symmetric,
/// the upper block triangle and its mirror (symmetric_addmm_out) for products known to be symmetric.
struct SquareProduct {
  int64_t blocks;  ///< 1: full products
  void mm(at::Tensor& out, const at::Tensor& x, const at::Tensor& y) const {
    if (blocks > 1) {
      symmetric_mm_out(out, x, y, blocks);
    } else {
      at::mm_out(out, x, y);
    }
  }
  /// out = beta self + alpha x y
  void addmm(at::Tensor& out, const at::Tensor& self, const at::Tensor& x, const at::Tensor& y, double beta,
             double alpha) const {
    if (blocks > 1) {
      symmetric_addmm_out(out, self, x, y, beta, alpha, blocks);
    } else {
      at::addmm_out(out, self, x, y, beta, alpha);
    }
  }
};

/// The products for an [s, s] iteration of `x` (its dtype and device) under `options`: the block
/// triangle on CPU only (on a GPU the full products run; a cuBLAS syrk path is not built).
SquareProduct square_product(int64_t s, const at::Tensor& x, const NsOptions& options) {
  const bool cut = options.symmetric && x.device().is_cpu();
  return SquareProduct{cut ? symmetric_product_blocks(s, x.scalar_type()) : 1};
}

/// The Gram iteration on one normalized wide matrix `x` ([s, l], s <= l, contiguous); `spare` is a
/// second contiguous [s, l] buffer. P = a I + R with R = b G + c G^2, and the accumulated
/// Q = alpha I + S with a scalar alpha, so no identity is ever added into a low-precision matrix (in
/// bfloat16 the diagonal would round to 2^-6): Q <- P Q is S <- a S + R S + alpha R, alpha <- a alpha;
/// G <- P G P is T = a G + R G, G = a T + T R (R and G commute); X <- Q X is alpha X + S X, written
/// into the spare, the two buffers then trading places. Returns the result, one of the two; the
/// [s, s] matrices live in scratch.a (G), .b (R), .t and .acc (T and S, trading roles).
at::Tensor gram_newton_schulz_one(at::Tensor x, at::Tensor spare, const NsOptions& options, NsScratch& scratch) {
  const auto& sched = options.schedule;
  const int64_t s = x.size(0);
  const SquareProduct product = square_product(s, x, options);
  at::Tensor g = scratch.a, r = scratch.b, t = scratch.t, acc = scratch.acc;
  bool identity = true;  // Q is the identity: S is not yet formed
  double alpha = 1.0;
  auto apply_q = [&] {
    at::addmm_out(spare, x, acc, x, /*beta=*/alpha, /*alpha=*/1.0);
    std::swap(x, spare);
  };
  product.mm(g, x, x.t());
  for (int k = 0; k < options.steps; ++k) {
    const auto& c = sched.at_step(k);
    const bool restart_next = options.gram_restart > 0 && k + 1 < options.steps && (k + 1) % options.gram_restart == 0;
    product.addmm(r, g, g, g, c[1], c[2]);  // R = b G + c G^2
    if (identity) {
      acc.copy_(r);
      alpha = c[0];
      identity = false;
    } else {
      product.addmm(t, acc, r, acc, c[0], 1.0);  // a S + R S
      t.add_(r, alpha);
      std::swap(acc, t);
      alpha *= c[0];
    }
    if (k + 1 < options.steps && !restart_next) {
      product.addmm(t, g, r, g, c[0], 1.0);  // T = a G + R G
      product.addmm(g, t, t, r, c[0], 1.0);  // G = a T + T R
    }
    if (restart_next) {
      apply_q();
      product.mm(g, x, x.t());
      identity = true;
    }
  }
  apply_q();
  return x;
}

void check_input(const at::Tensor& g, const NsOptions& options) {
  if (g.dim() != 2 && g.dim() != 3) {
    throw ShapeError("newton_schulz expects a matrix [m, n] or a batch [k, m, n], got a tensor of rank " +
                     std::to_string(g.dim()) + " with shape " + c10::str(g.sizes()));
  }
  if (g.numel() == 0) {
    throw ShapeError("newton_schulz got an empty matrix or batch, shape " + c10::str(g.sizes()));
  }
  if (options.steps < 1) {
    throw InvalidArgument("newton_schulz steps must be >= 1, got " + std::to_string(options.steps));
  }
  if (options.schedule.coefficients.empty()) {
    throw InvalidArgument("newton_schulz schedule '" + options.schedule.name + "' has no coefficients");
  }
}

/// The Frobenius norm is accumulated in fp32, or fp64 when computing in fp64.
at::ScalarType norm_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

/// X = U / (||U||_F * norm_scale + eps) per matrix over `dims`, returned in the compute dtype.
/// For bf16, fp32 and fp64 (8+ exponent bits) the cast comes first and the norm is accumulated in
/// fp32, exactly as torch.optim.Muon rounds. fp16 normalizes in fp32 first: cast first, gradients
/// above 65504 would overflow and tiny ones would turn subnormal.
at::Tensor normalize_for_ns(const at::Tensor& u, const NsSchedule& sched, at::ScalarType compute, at::IntArrayRef dims,
                            const at::Tensor& into = at::Tensor()) {
  if (compute == at::kHalf) {
    const at::Tensor wide = u.contiguous().to(norm_dtype(u));
    const at::Tensor norm = at::linalg_vector_norm(wide, 2, dims, /*keepdim=*/true) * sched.norm_scale + sched.eps;
    return (wide / norm).to(compute);
  }
  // Contiguous, so the norm sums in one order; `into` (when given: contiguous, u's numel, compute
  // dtype) spares a fresh allocation, whose page faults cost more than the copy for large matrices.
  at::Tensor x = into.defined() ? into.view(u.sizes()) : at::empty(u.sizes(), u.options().dtype(compute));
  x.copy_(u);
  at::Tensor norm = at::linalg_vector_norm(x.to(norm_dtype(x)), 2, dims, /*keepdim=*/true);
  norm = norm.mul_(sched.norm_scale).add_(sched.eps).to(x.scalar_type());
  return x.div_(norm);
}

}  // namespace

bool cpu_has_bf16_arithmetic() {
  static const bool has = [] {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("flags", 0) != 0) continue;
      std::istringstream words(line.substr(line.find(':') + 1));
      std::string flag;
      while (words >> flag) {
        if (flag == "avx512_bf16" || flag == "amx_bf16") return true;
      }
      return false;
    }
    return false;
  }();
  return has;
}

at::ScalarType ns_compute_dtype(const NsOptions& options, const at::Tensor& g) {
  if (options.compute_dtype != kNsDtypeAuto) return options.compute_dtype;
  return g.is_cuda() || (g.device().is_cpu() && cpu_has_bf16_arithmetic()) ? at::kBFloat16 : at::kFloat;
}

namespace {

/// `t` reallocated as [sizes] unless it already is, in `dtype` on `device`.
void ensure_buffer(at::Tensor& t, at::IntArrayRef sizes, at::ScalarType dtype, at::Device device) {
  if (t.defined() && t.sizes().equals(sizes) && t.scalar_type() == dtype && t.device() == device) return;
  t = at::empty(sizes, at::TensorOptions().dtype(dtype).device(device));
}

}  // namespace

void NsScratch::ensure_input(int64_t s, int64_t l, at::ScalarType dtype, at::Device device) {
  ensure_buffer(x, {s * l}, dtype, device);
}

void NsScratch::ensure_iteration(int64_t s, int64_t l, at::ScalarType dtype, at::Device device) {
  ensure_buffer(a, {s, s}, dtype, device);
  ensure_buffer(b, {s, s}, dtype, device);
  ensure_buffer(next, {s * l}, dtype, device);
}

void NsScratch::ensure_gram(int64_t s, int64_t l, at::ScalarType dtype, at::Device device) {
  ensure_iteration(s, l, dtype, device);
  ensure_buffer(t, {s, s}, dtype, device);
  ensure_buffer(acc, {s, s}, dtype, device);
}

at::Tensor newton_schulz_matrix(const at::Tensor& g, const NsOptions& options, NsScratch& scratch) {
  const bool tall = g.size(0) > g.size(1);
  const int64_t s = std::min(g.size(0), g.size(1)), l = std::max(g.size(0), g.size(1));
  const bool gram = ns_uses_gram(s, l, options);
  const at::ScalarType dtype = ns_compute_dtype(options, g);
  const bool fp16 = dtype == at::kHalf;  // normalizes in fp32 first: no buffer to reuse
  if (!fp16) scratch.ensure_input(s, l, dtype, g.device());
  const at::Tensor x = normalize_for_ns(g, options.schedule, dtype, {0, 1}, fp16 ? at::Tensor() : scratch.x);
  if (gram) {
    // Unlike the plain iteration, the Gram one reads X in every product of a restart; a tall matrix
    // is transposed once into the other buffer (reading it through its transposed view instead made
    // the benchmark GPT's step with ns_gram: auto and ns_symmetric 4% slower).
    scratch.ensure_gram(s, l, dtype, g.device());
    at::Tensor next = scratch.next.view({s, l}), own = x.view({s, l});  // own: x's storage, seen wide
    const at::Tensor wide = tall ? gram_newton_schulz_one(next.copy_(x.t()), own, options, scratch)
                                 : gram_newton_schulz_one(own, next, options, scratch);
    return tall ? wide.t() : wide;
  }
  // A tall matrix is iterated on its transposed view: the first X <- a X + B X reads the view and
  // writes a contiguous [s, l] matrix, as torch.optim.Muon does, with no transposing copy before.
  scratch.ensure_iteration(s, l, dtype, g.device());
  at::Tensor cur = tall ? x.t() : x;
  at::Tensor spare = scratch.next.view({s, l});
  const auto& sched = options.schedule;
  const SquareProduct product = square_product(s, x, options);
  for (int step = 0; step < options.steps; ++step) {
    const auto& c = sched.at_step(step);
    product.mm(scratch.a, cur, cur.t());                                      // A = X X^T
    product.addmm(scratch.b, scratch.a, scratch.a, scratch.a, c[1], c[2]);    // B = b A + c A A
    at::addmm_out(spare, cur, scratch.b, cur, /*beta=*/c[0], /*alpha=*/1.0);  // X = a X + B X
    // The normalized input's storage, no longer read after the first step, becomes the spare.
    at::Tensor freed = cur.is_contiguous() ? cur : x.view({s, l});
    cur = spare;
    spare = freed;
  }
  return tall ? cur.t() : cur;
}

void copy_ns_result(at::Tensor out, const at::Tensor& result) {
  if (ns_result_fused_supported(out, result)) {  // float32 out: one pass, read in result's layout
    copy_ns_result_fused(out, result);
    return;
  }
  // ATen's transposing copy that also casts took 4.7 ms on a 512 x 3072 matrix here, the
  // same-dtype one 1.0 ms and a plain cast 0.2 ms: transpose in the result's dtype, then cast.
  if (result.is_contiguous() || out.scalar_type() == result.scalar_type()) {
    out.copy_(result);
  } else {
    out.copy_(result.contiguous());
  }
}

at::Tensor newton_schulz(const at::Tensor& g, const NsOptions& options) {
  check_input(g, options);
  // One matrix at a time through mm/addmm, each normalized, iterated and written out before the
  // next, so its data stays in cache. BLAS threads each product over its rows and columns (a
  // batched bmm of one matrix runs single-threaded on CPU), and a matrix's result never depends on
  // which others share the call, so distributed owners reproduce single-process bits.
  const at::Tensor in = g.dim() == 3 ? g : g.unsqueeze(0);
  at::Tensor out = at::empty(in.sizes(), in.options().memory_format(at::MemoryFormat::Contiguous));
  NsScratch scratch;
  for (int64_t i = 0; i < in.size(0); ++i) copy_ns_result(out[i], newton_schulz_matrix(in[i], options, scratch));
  return g.dim() == 3 ? out : out.squeeze(0);
}

at::Tensor newton_schulz_reference(const at::Tensor& g, const NsOptions& options) {
  check_input(g, options);
  if (g.dim() == 3) {
    std::vector<at::Tensor> outs;
    for (int64_t i = 0; i < g.size(0); ++i) outs.push_back(newton_schulz_reference(g[i], options));
    return at::stack(outs);
  }
  const auto& sched = options.schedule;
  at::Tensor x = g.size(0) > g.size(1) ? g.t() : g;
  const bool tall = g.size(0) > g.size(1);
  x = normalize_for_ns(x, sched, ns_compute_dtype(options, g), {0, 1});
  for (int step = 0; step < options.steps; ++step) {
    const auto& c = sched.at_step(step);
    at::Tensor a = at::matmul(x, x.t());
    at::Tensor b = c[1] * a + c[2] * at::matmul(a, a);
    x = c[0] * x + at::matmul(b, x);
  }
  if (tall) x = x.t();
  return x.to(g.scalar_type()).contiguous();
}

}  // namespace orthotron
