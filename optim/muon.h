// muon.h: the Muon update for one parameter (momentum, Nesterov, Newton-Schulz, shape scale,
// decoupled weight decay) and its validated options. Pure tensor math; no routing, no communication.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "optim/newton_schulz.h"

namespace orthotron {

/// How the momentum buffer accumulates. Newton-Schulz is scale invariant, so both give the same
/// direction; they differ in how weight decay and lr interact with the buffer's magnitude.
///  - ema (default; Keller Jordan, PyTorch, Megatron): M = beta M + (1 - beta) G; Nesterov U = (1 - beta) G + beta M
///  - sum (Moonlight, Dion):                          M = beta M + G;            Nesterov U = G + beta M
enum class MomentumForm { kEma, kSum };

/// The factor multiplying the orthogonalized update of an m x n matrix.
///  - original (Keller Jordan, PyTorch default): sqrt(max(1, m / n))
///  - match_rms_adamw (Moonlight): 0.2 * sqrt(max(m, n)), so Muon can reuse AdamW's lr and weight decay
///  - spectral: sqrt(max(m, n)) * spectral_factor
enum class ScaleMode { kOriginal, kMatchRmsAdamW, kSpectral };

std::string to_string(MomentumForm f);
std::string to_string(ScaleMode m);
/// Parse "ema"/"sum" and "original"/"match_rms_adamw"/"spectral"; InvalidArgument lists the valid names.
MomentumForm parse_momentum_form(const std::string& s);
ScaleMode parse_scale_mode(const std::string& s);

struct MuonOptions {
  double lr = 0.02;
  double momentum = 0.95;  ///< beta, in [0, 1)
  bool nesterov = true;
  MomentumForm momentum_form = MomentumForm::kEma;
  ScaleMode scale_mode = ScaleMode::kOriginal;
  double spectral_factor = 1.0;  ///< extra factor of the spectral scale mode, > 0
  double weight_decay = 0.0;     ///< decoupled: W <- W (1 - lr wd), with the unadjusted lr
  NsOptions ns;

  /// Throws InvalidArgument naming the first bad field and its valid range.
  void validate() const;
};

/// The shape scale for an m x n matrix under `options`.
double muon_scale(int64_t m, int64_t n, const MuonOptions& options);

/// How a parameter of any rank is seen by Muon: 2-D as one matrix [m, n]; 3-D [E, m, n] as a
/// batch of E independent matrices (stacked MoE experts); 4-D and up (conv filters) as one
/// matrix [shape[0], prod(rest)]. 0-D and 1-D tensors are rejected (ShapeError): they belong to AdamW.
/// Returns a view of `t` with shape [k, m, n].
at::Tensor muon_matrix_view(const at::Tensor& t, const std::string& name);

/// Advances the momentum buffer with `grad` and returns the direction U that Newton-Schulz
/// will orthogonalize (Nesterov or plain momentum). `momentum` has the parameter's shape and is
/// updated in place. Blocking, no communication.
at::Tensor muon_momentum_direction(const at::Tensor& grad, at::Tensor& momentum, const MuonOptions& options);

/// Applies decoupled weight decay and the scaled orthogonal update `ortho` ([k, m, n] view shape,
/// the parameter's own shape, or a tall matrix's Newton-Schulz result: a transposed view) to `param`
/// in place: W <- W (1 - lr wd) - lr scale O. One fused pass (update_fused.h) where
/// ns_result_fused_supported(param, ortho), muon_apply_update_reference otherwise; the same bits.
void muon_apply_update(at::Tensor& param, const at::Tensor& ortho, const MuonOptions& options, const std::string& name);

/// The simple reference of muon_apply_update: ATen's param.mul_(1 - lr wd), then param.add_ of
/// ortho made contiguous, times -lr scale. Kept so a test can hold the fused pass to its bits.
void muon_apply_update_reference(at::Tensor& param, const at::Tensor& ortho, const MuonOptions& options,
                                 const std::string& name);

/// One full Muon step on one parameter: momentum, direction, NS (batched for 3-D stacks),
/// scale, weight decay. `param` and `momentum` are updated in place. Must be called without
/// autograd recording (the container holds a NoGradGuard).
void muon_step(at::Tensor& param, const at::Tensor& grad, at::Tensor& momentum, const MuonOptions& options,
               const std::string& name);

}  // namespace orthotron
