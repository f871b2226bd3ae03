// tensor_parallel_ops.cpp: autograd functions around the TP communicator's all-reduce.
#include "engine/model/tensor_parallel_ops.h"

#include <torch/csrc/autograd/custom_function.h>

namespace orthotron {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Communicator& comm_of(AutogradContext* ctx) {
  return *reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
}

at::Tensor summed(const at::Tensor& x, Communicator& tp) {
  at::Tensor out = x.contiguous().clone();
  tp.all_reduce(out, ReduceOp::kSum);
  return out;
}

struct CopyToRegion : public torch::autograd::Function<CopyToRegion> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Communicator* tp) {
    ctx->saved_data["comm"] = reinterpret_cast<int64_t>(tp);
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {summed(grad[0], comm_of(ctx)), at::Tensor()};
  }
};

struct ReduceFromRegion : public torch::autograd::Function<ReduceFromRegion> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, Communicator* tp) { return summed(x, *tp); }
  static variable_list backward(AutogradContext*, variable_list grad) { return {grad[0], at::Tensor()}; }
};

}  // namespace

at::Tensor tp_copy_to_region(const at::Tensor& x, Communicator& tp) {
  return CopyToRegion::apply(x, &tp);
}

at::Tensor tp_reduce_from_region(const at::Tensor& x, Communicator& tp) {
  return ReduceFromRegion::apply(x, &tp);
}

at::Tensor vocab_parallel_embedding(const at::Tensor& weight_piece, const at::Tensor& tokens, int64_t vocab_start,
                                    Communicator& tp) {
  const int64_t rows = weight_piece.size(0);
  const at::Tensor outside = (tokens < vocab_start).logical_or(tokens >= vocab_start + rows);
  const at::Tensor local_ids = (tokens - vocab_start).masked_fill(outside, 0);
  const at::Tensor partial = at::embedding(weight_piece, local_ids).masked_fill(outside.unsqueeze(-1), 0.0);
  return tp_reduce_from_region(partial, tp);
}

at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits_piece, const at::Tensor& labels, int64_t vocab_start,
                                        Communicator& tp) {
  const int64_t cols = logits_piece.size(-1);
  // The max over the whole vocabulary only shifts the exponentials: no gradient flows through it.
  at::Tensor max = std::get<0>(logits_piece.detach().max(-1, /*keepdim=*/true)).contiguous();
  tp.all_reduce(max, ReduceOp::kMax);
  const at::Tensor shifted = logits_piece - max;
  const at::Tensor sum_exp = tp_reduce_from_region(shifted.exp().sum(-1), tp);
  const at::Tensor outside = (labels < vocab_start).logical_or(labels >= vocab_start + cols);
  const at::Tensor local = (labels - vocab_start).masked_fill(outside, 0);
  const at::Tensor picked = shifted.gather(-1, local.unsqueeze(-1)).squeeze(-1).masked_fill(outside, 0.0);
  const at::Tensor label_logit = tp_reduce_from_region(picked, tp);
  return (sum_exp.log() - label_logit).mean();
}

}  // namespace orthotron
