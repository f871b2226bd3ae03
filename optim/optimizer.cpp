// optimizer.cpp: the gradient-norm clipping both containers share.
#include "optim/optimizer.h"

#include <cmath>

#include "base/errors.h"

namespace orthotron {

void Optimizer::set_max_grad_norm(double max_norm) {
  if (!std::isfinite(max_norm) || max_norm < 0) {
    throw InvalidArgument("max_grad_norm must be finite and >= 0 (0 turns clipping off), got " +
                          std::to_string(max_norm));
  }
  max_grad_norm_ = max_norm;
}

double Optimizer::begin_clipped_step(double norm) {
  last_grad_norm_ = norm;
  last_step_skipped_ = !std::isfinite(norm);
  if (last_step_skipped_ || max_grad_norm_ <= 0 || norm <= max_grad_norm_) return 1.0;
  return max_grad_norm_ / (norm + 1e-6);
}

double squared_l2_norm(const at::Tensor& t) {
  if (t.is_contiguous() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble)) {
    const at::Tensor flat = t.view({-1});
    return at::dot(flat, flat).item<double>();
  }
  const double n = at::linalg_vector_norm(t, 2).item<double>();
  return n * n;
}

double global_l2_norm(const std::vector<at::Tensor>& tensors) {
  double sum = 0;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    sum += squared_l2_norm(t);
  }
  return std::sqrt(sum);
}

}  // namespace orthotron
