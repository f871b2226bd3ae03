// tensor_parallel_ops.h: the differentiable communication of Megatron's tensor parallelism over a
// TP communicator: the identity whose backward all-reduces ("f", before a column-parallel linear),
// the all-reduce whose backward is the identity ("g", after a row-parallel linear), the
// vocabulary-parallel embedding and the vocabulary-parallel cross-entropy. Each is collective over
// `tp` in forward and in backward: every TP rank must run the same forward and the same backward.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "parallel/communicator.h"

namespace orthotron {

/// Forward: x. Backward: the gradient summed over the TP ranks. Blocking.
at::Tensor tp_copy_to_region(const at::Tensor& x, Communicator& tp);

/// Forward: x summed over the TP ranks. Backward: the gradient as it is. Blocking.
at::Tensor tp_reduce_from_region(const at::Tensor& x, Communicator& tp);

/// Embedding lookup in a table cut by rows: this rank holds `weight_piece` = rows
/// [vocab_start, vocab_start + weight_piece.size(0)) of the [V, H] table. tokens [...] int64 holding
/// ids in [0, V) -> [..., H], the full lookup on every TP rank (ids outside the piece contribute
/// zeros here, and the sum over ranks fills them in).
at::Tensor vocab_parallel_embedding(const at::Tensor& weight_piece, const at::Tensor& tokens, int64_t vocab_start,
                                    Communicator& tp);

/// Mean cross-entropy of logits cut by vocabulary: `logits_piece` [N, V / T] float32 holds columns
/// [vocab_start, vocab_start + V / T) of the [N, V] logits; labels [N] int64 in [0, V). Returns the
/// 0-D mean loss, the same value on every TP rank (the max, the sum of exponentials and the label's
/// logit are all-reduced), differentiable into logits_piece.
at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits_piece, const at::Tensor& labels, int64_t vocab_start,
                                        Communicator& tp);

}  // namespace orthotron
