// newton_schulz.h: Newton-Schulz orthogonalization (the approximate polar factor) and its
// published coefficient schedules. Pure functions of tensors; no optimizer state, no communication.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <string>
#include <vector>

namespace orthotron {

/// One quintic step's coefficients: X <- a X + (b A + c A A) X with A = X X^T.
using NsCoefficients = std::array<double, 3>;

/// A coefficient schedule: per-step coefficients plus the normalization applied before step 1,
/// X = U / (||U||_F * norm_scale + eps).
struct NsSchedule {
  std::string name;                          ///< "quintic", "quintic_per_step", "polar_express" or "custom"
  std::vector<NsCoefficients> coefficients;  ///< step k uses coefficients[min(k, size-1)]
  double norm_scale = 1.0;                   ///< polar_express bakes in its 1.02 safety factor here
  double eps = 1e-7;

  /// Coefficients for 0-based step k: a schedule shorter than the step count repeats its last entry.
  const NsCoefficients& at_step(int k) const;
};

/// The published schedules by name (see docs in muon.md): "quintic" (Keller Jordan, 1 entry, eps 1e-7),
/// "quintic_per_step" (modded-nanogpt, 5 entries, eps 1e-7), "polar_express" (Amsel et al. 2025,
/// 5 entries, norm_scale 1.02, eps 1e-6). Throws InvalidArgument for any other name, listing the valid ones.
NsSchedule ns_schedule_by_name(const std::string& name);

/// A user-supplied schedule. Throws InvalidArgument when the list is empty or holds a non-finite value.
NsSchedule ns_custom_schedule(std::vector<NsCoefficients> coefficients, double eps = 1e-7);

/// Largest singular value a schedule may produce from a normalized input before it counts as
/// diverging (the published schedules stay below 1.25).
constexpr double kNsStableBound = 3.0;

/// Checks that `steps` steps of `schedule` keep every singular value bounded: the scalar map
/// x -> a x + b x^3 + c x^5 of each step, composed, is evaluated on 2049 points of [0, 1] (the
/// normalized input's singular values) and must stay finite with |result| <= kNsStableBound.
/// InvalidArgument naming the step, x and the value otherwise (custom coefficients like
/// [[10, 10, 10]] that would train to NaN are refused here, before the first step).
void check_ns_schedule_stable(const NsSchedule& schedule, int steps);

/// The names ns_schedule_by_name accepts.
const std::vector<std::string>& ns_schedule_names();

/// `ns_dtype: auto`, stored in NsOptions::compute_dtype and resolved per call by ns_compute_dtype.
constexpr at::ScalarType kNsDtypeAuto = at::ScalarType::Undefined;

/// Whether this CPU has bfloat16 arithmetic: avx512_bf16 or amx_bf16 among /proc/cpuinfo's flags
/// (read once per process; false where the file is missing).
bool cpu_has_bf16_arithmetic();

/// "float32", "float64", "bfloat16", "float16", "auto" <-> the torch dtype (auto: kNsDtypeAuto);
/// InvalidArgument lists the valid names.
at::ScalarType parse_ns_dtype(const std::string& name);
std::string ns_dtype_name(at::ScalarType t);

/// Whether Newton-Schulz iterates on the Gram matrix (newton_schulz_gram_flops):
/// off: the plain iteration always; on: the Gram iteration for every matrix; auto: the Gram
/// iteration where its FLOP count is at most kNsGramAutoRatio of the plain one (aspect ratio about
/// 2 and more), the plain one for near-square matrices.
enum class NsGram { kOff, kAuto, kOn };

/// `auto` picks the Gram iteration when gram FLOPs <= this fraction of plain FLOPs.
constexpr double kNsGramAutoRatio = 0.9;

/// How a step's Newton-Schulz work uses the process's intra-op threads (apply_muon_tasks):
/// products: one matrix at a time, every matrix product threaded by BLAS across all threads;
/// matrices: whole matrices side by side, each on one thread from start to end (largest first,
/// the next free thread takes the next matrix), so small products do not pay BLAS's per-product
/// thread split. Both give the same bits at the same thread count (tested).
enum class NsParallel { kProducts, kMatrices };

struct NsOptions {
  NsSchedule schedule = ns_schedule_by_name("quintic");
  int steps = 5;                                         ///< >= 1
  at::ScalarType compute_dtype = at::ScalarType::Float;  ///< fp32 on CPU, bf16 usual on GPU; or kNsDtypeAuto
  NsGram gram = NsGram::kOff;
  /// The Gram iteration rebuilds X from its accumulated polynomial and recomputes X X^T every
  /// this many steps (0: never). Without it, rounding in the Gram matrix compounds on matrices with
  /// a decaying spectrum (tenfold in bfloat16, measured in a Python prototype); with 3 the error
  /// stays within the factor test_newton_schulz states.
  int gram_restart = 3;
  NsParallel parallel = NsParallel::kMatrices;
  /// ns_symmetric: products with a symmetric result (X X^T and A A in the plain iteration; every
  /// [s, s] product of the Gram one, whose factors are commuting symmetric matrices) computed as their
  /// upper block triangle and mirrored (symmetric_product.h), for matrices whose short side is
  /// 256 or more in float32 and float64, 512 or more in bfloat16 and float16
  /// (symmetric_product_blocks). Within the tolerances test_newton_schulz states of the full
  /// products; off keeps the full products, the reference.
  bool symmetric = false;
};

/// Orthogonalizes each matrix of `g` ([m, n] or a batch [k, m, n]) with Newton-Schulz and returns
/// the result in g's dtype and shape. Wide and tall matrices both work (tall ones are transposed so
/// the Gram matrix is the small side). Batched input is one fused call for all k matrices.
/// fp16 compute normalizes in fp32 before the cast (no overflow, no subnormals); bf16/fp32/fp64 cast
/// first and accumulate the norm in fp32, which rounds exactly as torch.optim.Muon does.
/// With options.gram (ns_uses_gram), the same polynomial is applied through the Gram matrix
/// instead: with G = X X^T and P = a I + b G + c G^2, X <- P X becomes Q <- P Q, G <- P G P on the
/// short side's [s, s] matrices, and X = Q X0 at the end (and at each restart). Equal to the plain
/// iteration in exact arithmetic; within the tolerances test_newton_schulz states in floating point.
/// Throws ShapeError for other ranks or empty input, InvalidArgument for steps < 1. Call it with
/// autograd off (the containers hold a NoGradGuard) when `g` requires grad.
at::Tensor newton_schulz(const at::Tensor& g, const NsOptions& options);

/// The dtype Newton-Schulz computes `g` in: options.compute_dtype, or under kNsDtypeAuto bfloat16
/// where products run in native bfloat16 (a CUDA tensor, or a CPU with cpu_has_bf16_arithmetic:
/// there the benchmark GPT's single-process Muon step took 346 ms in bfloat16 against 1006 ms in
/// float32) and float32 elsewhere (emulated bfloat16 products are slower than float32 ones).
at::ScalarType ns_compute_dtype(const NsOptions& options, const at::Tensor& g);

/// Buffers newton_schulz_matrix reuses from call to call, on the input's device: each allocated when
/// first needed and reallocated when the shape, dtype or device changes (float16, normalized in
/// float32 into a fresh tensor, never uses x; only the Gram iteration uses t and acc).
struct NsScratch {
  at::Tensor a, b;    ///< [s, s]: X X^T and the polynomial (plain); G and R (Gram)
  at::Tensor t, acc;  ///< [s, s]: the Gram iteration's T and accumulated S
  at::Tensor x;       ///< s * l: the normalized input
  at::Tensor next;    ///< s * l: the iteration's other buffer for X
  void ensure_input(int64_t s, int64_t l, at::ScalarType dtype, at::Device device);
  void ensure_iteration(int64_t s, int64_t l, at::ScalarType dtype, at::Device device);
  void ensure_gram(int64_t s, int64_t l, at::ScalarType dtype, at::Device device);
};

/// newton_schulz of one matrix `g` ([m, n], any layout, not empty) without the cast back: the
/// result in ns_compute_dtype(options, g), shape [m, n] (for a tall matrix a transposed view of a
/// contiguous [n, m] buffer), living in `scratch` or a fresh tensor: read it before the next call
/// with the same scratch. The fast path newton_schulz and the Muon step share; no input checks.
at::Tensor newton_schulz_matrix(const at::Tensor& g, const NsOptions& options, NsScratch& scratch);

/// Writes a newton_schulz_matrix result into `out` ([m, n], contiguous, any dtype): a float32 `out`
/// in one pass that reads the result in its own layout (copy_ns_result_fused, update_fused.h),
/// any other by transposing in the result's dtype before casting (ATen's casting transpose is
/// several times slower).
void copy_ns_result(at::Tensor out, const at::Tensor& result);

/// The simple reference: one matrix at a time, every operation written out as in muon.md.
/// Slow; kept beside the fast path so a test can hold the two equal.
at::Tensor newton_schulz_reference(const at::Tensor& g, const NsOptions& options);

/// FLOPs of `steps` Newton-Schulz steps on one m x n matrix: steps * (4 s^2 l + 2 s^3), s = min, l = max.
double newton_schulz_flops(int64_t m, int64_t n, int steps);

/// FLOPs of the Gram iteration on one m x n matrix (s = min, l = max): G = X X^T once and X = Q X0
/// at the end (2 s^2 l each, plus 4 s^2 l per restart); per step G^2, the polynomial P times the
/// accumulated Q (not on the first step after a start) and G <- P G P (not before a restart or
/// at the end), 2 s^3 per product. With 5 steps and a restart after 3: 8 s^2 l + 28 s^3, against
/// the plain 20 s^2 l + 10 s^3: a third fewer at l = 4 s, more for longer matrices.
double newton_schulz_gram_flops(int64_t m, int64_t n, int steps, int restart);

/// Whether newton_schulz runs the Gram iteration for an m x n matrix under `options`.
bool ns_uses_gram(int64_t m, int64_t n, const NsOptions& options);

}  // namespace orthotron
