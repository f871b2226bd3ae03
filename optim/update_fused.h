// update_fused.h: the passes that read a Newton-Schulz result in its own layout, one pass each:
// the Muon weight update W <- W d + alpha O (d = 1 - lr wd, alpha = -lr scale) and the copy of a
// result into a float32 output. A tall matrix's result is a transposed view of a contiguous buffer
// (newton_schulz_matrix); ATen makes it contiguous first (one more pass, and a slow transposing
// copy), then multiplies W by d and adds in two more. Measured on the AMD EPYC development machine
// with a bfloat16 result, data in cache: 3072 x 512 at 2 threads 0.79 ms by ATen, 0.25 fused (1
// thread: 0.98 and 0.51); the benchmark GPT's 32 Muon matrices, one per thread as the step applies
// them, 13.9 and 11.2 ms (bench_muon_step; there the pass waits on memory).
//
// Numerics: the bits of ATen's W.mul_(d) then W.add_(O, alpha) in float32, whose add computes
// fma(O, alpha, W) with d and alpha rounded to float32 first (a bfloat16 O is widened exactly).
// This file is compiled without other contraction (-ffp-contract=off): the FMAs are the explicit
// std::fma calls. test_muon holds the passes bitwise equal to their references (muon.h's
// muon_apply_update_reference, ATen's copy) over wide, tall and odd shapes at 1 and 2 threads.
#pragma once

#include <ATen/ATen.h>

namespace orthotron {

/// True when the fused passes take `dst` and `result`: `dst` float32, CPU, contiguous; `result`
/// float32 or bfloat16 on the CPU with dst's number of elements, and either contiguous or a 2-D
/// transposed view of a contiguous buffer (strides (1, rows)) of dst's 2-D shape (dst viewed as
/// result's shape).
bool ns_result_fused_supported(const at::Tensor& dst, const at::Tensor& result);

/// dst <- dst * decay + alpha * result in one multithreaded pass, result read in its own layout; the
/// product by decay is skipped where decay rounds to 1 in float32 (a product by 1 changes no bit, so
/// this equals ATen's skipping its mul_ without weight decay). Expects ns_result_fused_supported.
/// Blocking; no communication.
void muon_update_fused(at::Tensor& dst, const at::Tensor& result, double decay, double alpha);

/// dst <- result (widened to float32), result read in its own layout, in one multithreaded pass.
/// Expects ns_result_fused_supported. Blocking.
void copy_ns_result_fused(at::Tensor& dst, const at::Tensor& result);

}  // namespace orthotron
