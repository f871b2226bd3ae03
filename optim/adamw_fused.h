// adamw_fused.h: the fused AdamW kernel. AdamW is memory-bound, so the kernel makes one pass per
// element over parameter, gradient and both moments (reads 16 bytes, writes 12), split across the
// intra-op threads, with no temporaries. Its simple reference is adamw_step_reference (adamw.h);
// tests hold the two within a stated tolerance.
//
// Numerics: per element, in float32, the reference's formula in its order of operations:
//   p <- p * (1 - lr wd);  m <- m b1 + (1 - b1) g;  v <- v b2 + ((1 - b2) g) g
//   p <- p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
// compiled without contraction into FMA (-ffp-contract=off), so the bits depend neither on the CPU's
// vector width, nor on the thread count, nor on where a slice starts. The reference's ATen kernels
// fuse some multiply-adds, so the two differ by a few ulp; the tests bound the difference.
#pragma once

#include <ATen/ATen.h>

#include "optim/adamw.h"

namespace orthotron {

/// True when the fused kernel can take these tensors: all float32, on the CPU, contiguous, with the
/// same number of elements, state allocated.
bool adamw_fused_supported(const at::Tensor& param, const at::Tensor& grad, const AdamWState& state);

/// One AdamW step through the fused kernel; advances state.step. Expects adamw_fused_supported.
/// Multithreaded over at::get_num_threads() threads; blocking.
void adamw_step_fused(at::Tensor& param, const at::Tensor& grad, AdamWState& state, const AdamWOptions& options);

}  // namespace orthotron
