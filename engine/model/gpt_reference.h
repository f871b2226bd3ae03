// gpt_reference.h: the GPT decoder computed the slow, obvious way, as the reference the fused model
// is tested against: separate per-head Q, K, V matrices cut out of the fused QKV by hand, separate
// gate and up matrices, attention written out as softmax(QK^T / sqrt(d) + causal mask) V head by
// head, rotary as an explicit rotation of channel pairs (i, i + d/2), RMSNorm and SwiGLU written out.
// Shares no forward code with gpt_model.cpp. For tests and debugging; slow.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "engine/model/gpt_model.h"

namespace orthotron {

/// One layer's weights as separate matrices.
struct UnfusedGptLayer {
  at::Tensor input_layernorm;                      ///< [H]
  std::vector<at::Tensor> q, k, v;                 ///< q: one [d, H] per query head; k, v: one per query group
  std::vector<at::Tensor> q_bias, k_bias, v_bias;  ///< [d] each; empty without add_qkv_bias
  at::Tensor linear_proj;                          ///< [H, H]
  at::Tensor pre_mlp_layernorm;                    ///< [H]
  at::Tensor gate, up;                             ///< [ffn, H] each
  at::Tensor linear_fc2;                           ///< [H, ffn]
};

/// A GptModel's weights, unfused. Every tensor is a fresh leaf requiring grad.
struct UnfusedGpt {
  GptOptions options;
  at::Tensor word_embeddings;  ///< [V, H]
  std::vector<UnfusedGptLayer> layers;
  at::Tensor final_layernorm;  ///< [H]
  at::Tensor output_layer;     ///< [V, H]; undefined when tie_embeddings (the word embeddings serve)
};

/// Copies `model`'s weights into separate matrices of `dtype` on the CPU. Query head j of group
/// g = j / q_per_group takes rows g * (q_per_group + 2) * d + (j % q_per_group) * d + [0, d) of
/// linear_qkv; key head g the next block after the group's queries, value head g the one after it.
UnfusedGpt unfuse_gpt(const GptModel& model, at::ScalarType dtype = at::kDouble);

/// tokens [B, S] int64 (any device; moved to the CPU) -> logits [B, S, V] in the weights' dtype.
at::Tensor reference_forward(const UnfusedGpt& w, const at::Tensor& tokens);
/// Mean cross-entropy of reference_forward(w, tokens) against labels [B, S], written out (logsumexp - picked logit).
at::Tensor reference_loss(const UnfusedGpt& w, const at::Tensor& tokens, const at::Tensor& labels);
/// reference_forward(unfuse_gpt(model), tokens).
at::Tensor reference_forward_unfused(const GptModel& model, const at::Tensor& tokens);

/// The gradients accumulated on `w`'s leaves, put back into `model`'s fused layout (the inverse of
/// unfuse_gpt's row map): one tensor per model parameter, same names and order as
/// model.parameters(), in `w`'s dtype on the CPU. A leaf without a gradient contributes zeros.
NamedParameters fused_gradients(const UnfusedGpt& w, const GptModel& model);

}  // namespace orthotron
