// symmetric_product.h: matrix products whose result is symmetric (X X^T, A A for a symmetric A, and
// the products of commuting symmetric matrices in the Gram iteration), computed as their upper block
// triangle through BLAS with the strict lower triangle mirrored from it: ns_symmetric. The BLAS in
// LibTorch's wheel exports no syrk or gemmt, so the saving comes from skipping the blocks below the
// diagonal: with b row blocks the product costs (b + 1) / (2 b) of the full one.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace orthotron {

/// Row blocks for an [s, s] symmetric product in `dtype`: 4 from s = 256 on for 4- and 8-byte types
/// and from s = 512 on for 2-byte ones, otherwise 1 (the full product). A function of the shape
/// and dtype alone, so ns_parallel: matrices and products get the same bits at the same thread
/// count, as with full products (NewtonSchulzParallel.SymmetricProductsSideBySideGetTheBitsOfOneByOne;
/// across thread counts the BLAS's own bits may differ, as they do for full products). Tuned for one
/// thread per product (ns_parallel: matrices), measured on the AMD EPYC development machine: there a
/// float32 NS took 0.69 to 0.82 of the full products' time from 256-sided matrices up, a bfloat16 one
/// 0.76 to 0.91 from 512 up (1.3x at 256, hence the higher bound). With 2 threads per product
/// (ns_parallel: products) the blocks are half as large per thread: 512-sided bfloat16 took 1.1x.
int64_t symmetric_product_blocks(int64_t s, at::ScalarType dtype);

/// Copies the strict upper triangle of `m` ([s, s], contiguous, any dtype) onto its strict lower
/// triangle, m[i][j] = m[j][i] for i > j, bit for bit. Threaded over row tiles through
/// at::parallel_for (serial inside a parallel region). Blocking.
void mirror_upper_to_lower(at::Tensor& m);

/// out = beta * self + alpha * (x @ y) for a product the caller knows to be symmetric: x [s, k],
/// y [k, s], self and out [s, s], out contiguous and aliasing none of the inputs; only self's upper
/// triangle is read. Computes the upper block triangle with `blocks` row blocks of ceil(s / blocks)
/// rows (block i's product covers the columns from its first row on), then mirror_upper_to_lower.
/// The result is exactly symmetric; where x @ y is symmetric only in exact arithmetic (commuting
/// symmetric factors in floating point), the lower triangle is the upper one's rounding instead
/// of its own. blocks == 1 is at::addmm_out plus the mirror.
void symmetric_addmm_out(at::Tensor& out, const at::Tensor& self, const at::Tensor& x, const at::Tensor& y, double beta,
                         double alpha, int64_t blocks);

/// out = x @ y for a symmetric product, as symmetric_addmm_out without the added term.
void symmetric_mm_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& y, int64_t blocks);

/// The simple reference: the full product P = beta * self + alpha * (x @ y) through at::addmm, its
/// strict lower triangle replaced by the transpose of its strict upper one.
at::Tensor symmetric_addmm_reference(const at::Tensor& self, const at::Tensor& x, const at::Tensor& y, double beta,
                                     double alpha);

}  // namespace orthotron
