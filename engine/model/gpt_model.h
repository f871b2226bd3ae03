// gpt_model.h: the Megatron-style GPT decoder (pre-norm RMSNorm, rotary attention with a fused QKV
// in Megatron's interleaved grouped-query layout, fused SwiGLU MLP): its parameters under Megatron's
// names, their seeded initialization, the forward pass, the loss, the Muon splits and the FLOP count.
// Plain tensors requiring grad and functional ATen ops (autograd through ATen); no optimizer, no I/O.
//
// Tensor parallelism (Megatron's layout, given a TP communicator of T ranks): linear_qkv (and its
// bias) and linear_fc1 are column-parallel (rank t holds whole query groups t G/T .. and the
// matching rows of gate and of up), linear_proj and linear_fc2 row-parallel (their input columns
// cut), the word embeddings and output layer vocabulary-parallel, the norms replicated. Forward
// all-reduces after each row-parallel linear and in the embedding; backward all-reduces before each
// column-parallel linear (tensor_parallel_ops.h). No sequence parallelism.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "engine/model/gpt_options.h"
#include "engine/model/rotary.h"
#include "optim/param_routing.h"
#include "optim/split_registry.h"
#include "optim/tp_layout.h"
#include "parallel/communicator.h"

namespace orthotron {

/// The parameters of one decoder layer (handles onto the tensors of GptModel::parameters()); with
/// tensor parallelism, this rank's pieces (shapes below are the logical ones).
struct GptLayerParams {
  at::Tensor input_layernorm;    ///< [H]
  at::Tensor linear_qkv;         ///< [(heads + 2 * groups) * head_dim, H], Megatron's interleaved layout
  at::Tensor linear_qkv_bias;    ///< [(heads + 2 * groups) * head_dim] or undefined (add_qkv_bias false)
  at::Tensor linear_proj;        ///< [H, H]
  at::Tensor pre_mlp_layernorm;  ///< [H]
  at::Tensor linear_fc1;         ///< [2 * ffn, H]: gate rows [0, ffn), up rows [ffn, 2 * ffn)
  at::Tensor linear_fc2;         ///< [H, ffn]
};

class GptModel {
 public:
  /// Validates `options` (ConfigError, see validate_gpt_options) and creates the parameters in
  /// float32 on the CPU from an explicit generator seeded with `seed` (the global RNG is neither
  /// read nor advanced), in model order: normal(0, init_std) for every matrix including the
  /// embedding and the output layer, normal(0, init_std / sqrt(2 * num_layers)) for linear_proj and
  /// linear_fc2, norms 1, the QKV bias 0. Then moves them to `device`. Same seed, same bits.
  /// With `tp` (T > 1 ranks; it must outlive the model) each rank draws the whole parameters as
  /// above and keeps its piece (tp_layout()), so a TP run starts from the TP=1 model's values; this
  /// costs the whole model's memory for a moment. ConfigError naming the field when heads, query
  /// groups, the FFN width or the vocabulary do not divide by T.
  GptModel(const GptOptions& options, uint64_t seed, at::Device device = at::kCPU, Communicator* tp = nullptr);

  const GptOptions& options() const { return options_; }
  at::Device device() const { return device_; }

  /// Parameters in model order with Megatron's names (leaves requiring grad). The same tensors every
  /// call: an optimizer updating them in place updates the model. With TP, this rank's pieces.
  const NamedParameters& parameters() const { return params_; }

  /// Handles onto the parameters, by role.
  const at::Tensor& word_embeddings() const { return word_embeddings_; }
  const GptLayerParams& layer(int64_t l) const { return layers_.at(static_cast<size_t>(l)); }
  const at::Tensor& final_layernorm() const { return final_layernorm_; }
  /// output_layer.weight, or the word embeddings when tie_embeddings.
  const at::Tensor& output_weight() const { return options_.tie_embeddings ? word_embeddings_ : output_layer_; }

  /// Tensor-parallel size and this rank's place in it (1 and 0 without TP).
  int tp_size() const { return tp_ == nullptr ? 1 : tp_->size(); }
  int tp_rank() const { return tp_ == nullptr ? 0 : tp_->rank(); }
  /// How each parameter is cut across the TP ranks (size 1 and no entries without TP).
  TensorParallelLayout tp_layout() const;

  /// The splits of the fused weights for Muon (over the logical parameters): every linear_qkv.weight by
  /// options().qkv_split (with kNone it is not registered: one matrix), every linear_fc1.weight into gate and up.
  SplitRegistry splits() const;

  /// tokens [B, S] int64 on device() (1 <= S <= max_seq_length) -> logits [B, S, V] float32 (with
  /// TP, this rank's vocabulary slice [B, S, V / T], columns [tp_rank V / T, ...); collective over TP).
  /// Attention through at::scaled_dot_product_attention (causal, grouped-query). Differentiable.
  /// ShapeError for a wrong rank, dtype, device or length; InvalidArgument for a token id outside
  /// [0, vocab_size) (checked for CPU tokens; on a GPU an out-of-range id is a device-side error).
  at::Tensor forward(const at::Tensor& tokens) const;

  /// Mean next-token cross-entropy of forward(tokens) against labels [B, S] int64 (labels[b, t] is
  /// the token that follows tokens[b, t]; every position counts). A 0-D float32 tensor to call
  /// backward() on (with TP, the same value on every TP rank, and backward is collective over TP).
  /// ShapeError / InvalidArgument as forward, and for labels.
  at::Tensor loss(const at::Tensor& tokens, const at::Tensor& labels) const;

  /// Elements of all parameters (the tied embedding counted once), of the logical model.
  int64_t num_parameters() const;

  /// Training FLOPs per token at sequence length `seq_length`, the figure MFU divides by:
  ///   6 * M + 12 * L * S * H
  /// where M is the number of matmul weights a token passes through (per layer linear_qkv,
  /// linear_proj, linear_fc1, linear_fc2, plus the V * H output layer, tied or not; the embedding
  /// lookup, norms and biases excluded), 6 = 2 (multiply-add) * 3 (forward + two backward matmuls),
  /// and 12 * L * S * H is QK^T and attention * V (2 * 2 * S * H per layer forward, times 3),
  /// counted over the full S x S square as PaLM and Megatron count it (no causal halving).
  double flops_per_token(int64_t seq_length) const;

 private:
  at::Tensor check_tokens(const at::Tensor& tokens, const char* what) const;
  /// The f and g of Megatron's TP (identities without TP).
  at::Tensor copy_to_tp(const at::Tensor& x) const;
  at::Tensor reduce_from_tp(const at::Tensor& x) const;

  GptOptions options_;
  at::Device device_;
  Communicator* tp_ = nullptr;
  NamedParameters params_;
  at::Tensor word_embeddings_;
  std::vector<GptLayerParams> layers_;
  at::Tensor final_layernorm_;
  at::Tensor output_layer_;  // undefined when tie_embeddings
  RotaryTables rotary_;
};

}  // namespace orthotron
