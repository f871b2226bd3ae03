// muon.cpp: the Muon update for one parameter.
#include "optim/muon.h"

#include <cmath>
#include <sstream>
#include <utility>

#include "base/errors.h"
#include "optim/momentum_fused.h"
#include "optim/update_fused.h"

namespace orthotron {

double muon_scale(int64_t m, int64_t n, const MuonOptions& options) {
  const double md = static_cast<double>(m), nd = static_cast<double>(n);
  switch (options.scale_mode) {
    case ScaleMode::kOriginal:
      return std::sqrt(std::max(1.0, md / nd));
    case ScaleMode::kMatchRmsAdamW:
      return 0.2 * std::sqrt(std::max(md, nd));
    case ScaleMode::kSpectral:
      return std::sqrt(std::max(md, nd)) * options.spectral_factor;
  }
  return 1.0;
}

at::Tensor muon_matrix_view(const at::Tensor& t, const std::string& name) {
  if (t.dim() < 2) {
    throw ShapeError("Muon parameter '" + name + "' has rank " + std::to_string(t.dim()) + " (shape " +
                     c10::str(t.sizes()) + "); Muon needs >= 2-D weights, route it to AdamW");
  }
  if (t.dim() == 2) return t.unsqueeze(0);
  if (t.dim() == 3) return t;
  return t.reshape({1, t.size(0), -1});
}

at::Tensor muon_momentum_direction(const at::Tensor& grad, at::Tensor& momentum, const MuonOptions& options) {
  const double beta = options.momentum;
  if (options.momentum_form == MomentumForm::kEma) {
    if (options.nesterov && ema_nesterov_fused_supported(grad, momentum)) {
      return ema_nesterov_fused(grad, momentum, beta);  // the two lerps below in one pass, same bits
    }
    momentum.lerp_(grad, 1.0 - beta);                                        // M = beta M + (1 - beta) G
    return options.nesterov ? grad.lerp(momentum, beta) : momentum.clone();  // U = (1 - beta) G + beta M
  }
  momentum.mul_(beta).add_(grad);                                         // M = beta M + G
  return options.nesterov ? grad.add(momentum, beta) : momentum.clone();  // U = G + beta M
}

namespace {

/// The factors of W <- W d + alpha O for `param` under `options`: d = 1 - lr wd, alpha = -lr scale.
std::pair<double, double> update_factors(const at::Tensor& param, const MuonOptions& options, const std::string& name) {
  const at::Tensor view = muon_matrix_view(param, name);
  return {1.0 - options.lr * options.weight_decay, -options.lr * muon_scale(view.size(1), view.size(2), options)};
}

}  // namespace

void muon_apply_update(at::Tensor& param, const at::Tensor& ortho, const MuonOptions& options,
                       const std::string& name) {
  if (!ns_result_fused_supported(param, ortho)) {
    muon_apply_update_reference(param, ortho, options, name);
    return;
  }
  const auto [decay, alpha] = update_factors(param, options, name);
  muon_update_fused(param, ortho, decay, alpha);
}

void muon_apply_update_reference(at::Tensor& param, const at::Tensor& ortho, const MuonOptions& options,
                                 const std::string& name) {
  const auto [decay, alpha] = update_factors(param, options, name);
  if (options.weight_decay != 0) param.mul_(decay);
  // A transposed result (a tall matrix's Newton-Schulz output) is made contiguous in its own dtype
  // first: ATen's add of a transposed bfloat16 view into float32 took 4.5 ms on 3072 x 512 here,
  // the transposing copy plus a contiguous add 2.0 ms (the same bits).
  param.add_(ortho.contiguous().view(param.sizes()), alpha);
}

void muon_step(at::Tensor& param, const at::Tensor& grad, at::Tensor& momentum, const MuonOptions& options,
               const std::string& name) {
  if (!grad.sizes().equals(param.sizes())) {
    throw ShapeError("Muon parameter '" + name + "': gradient shape " + c10::str(grad.sizes()) +
                     " differs from parameter shape " + c10::str(param.sizes()));
  }
  at::Tensor u = muon_momentum_direction(grad, momentum, options);
  at::Tensor ortho = newton_schulz(muon_matrix_view(u, name), options.ns);
  muon_apply_update(param, ortho, options, name);
}

}  // namespace orthotron
