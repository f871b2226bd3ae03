// momentum_fused.h: Muon's default momentum (EMA form) and Nesterov direction in one pass. ATen
// takes two, M.lerp_(G, 1 - beta) and G.lerp(M, beta), each reading two tensors and writing one;
// fused, the step reads G and M once and writes M and U (4 streams instead of 6).
//
// Numerics: the bits of those two ATen lerps on the CPU, whose vectorized kernel computes
// lerp(a, b, w) as fma(w, b - a, a) when |w| < 0.5 and fma(w - 1, b - a, b) otherwise, in float32
// with w rounded to float32 first. This file is compiled without other contraction
// (-ffp-contract=off): the FMAs are the explicit std::fma calls. A test holds the kernel bitwise
// equal to the two ATen calls over sizes with every tail length and at 1 and 2 threads.
#pragma once

#include <ATen/ATen.h>

namespace orthotron {

/// True when the fused pass can take these: float32, CPU, contiguous, the same number of elements.
bool ema_nesterov_fused_supported(const at::Tensor& grad, const at::Tensor& momentum);

/// momentum <- lerp(momentum, grad, 1 - beta) in place, and returns U = lerp(grad, momentum, beta)
/// (a new contiguous tensor of grad's shape), in one multithreaded pass; blocking. Expects
/// ema_nesterov_fused_supported.
at::Tensor ema_nesterov_fused(const at::Tensor& grad, at::Tensor& momentum, double beta);

}  // namespace orthotron
