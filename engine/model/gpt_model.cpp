// gpt_model.cpp: the GPT decoder's parameters, initialization and forward pass.
#include "engine/model/gpt_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <string>
#include <vector>

#include "base/errors.h"
#include "engine/model/tensor_parallel_ops.h"

namespace orthotron {

namespace {

// One parameter drawn on the CPU in float32 from `gen`: normal(0, std), or filled with `fill` when std < 0.
at::Tensor draw_param(at::IntArrayRef shape, double std, double fill, at::Generator& gen) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  if (std >= 0.0) {
    t.normal_(0.0, std, gen);
  } else {
    t.fill_(fill);
  }
  return t;
}

/// ConfigError unless every TP-cut size of `o` divides by `tp`.
void check_tp_divisibility(const GptOptions& o, int tp) {
  auto need = [&](const char* field, int64_t value) {
    if (value % tp != 0) {
      throw ConfigError("model." + std::string(field) + " = " + std::to_string(value) + " does not divide by " +
                        "parallel.tensor_parallel = " + std::to_string(tp) +
                        " (each tensor-parallel rank holds an equal share)");
    }
  };
  need("num_attention_heads", o.num_attention_heads);
  need("num_query_groups", o.num_query_groups);
  need("ffn_hidden_size", o.ffn_hidden_size);
  need("vocab_size", o.vocab_size);
}

}  // namespace

GptModel::GptModel(const GptOptions& options, uint64_t seed, at::Device device, Communicator* tp)
    : options_(options), device_(device), tp_(tp != nullptr && tp->size() > 1 ? tp : nullptr) {
  validate_gpt_options(options_);
  const GptOptions& o = options_;
  check_tp_divisibility(o, tp_size());
  const int64_t h = o.hidden_size, d = o.head_dim();
  const int64_t qkv_rows = (o.num_attention_heads + 2 * o.num_query_groups) * d;
  const double out_std = o.init_std / std::sqrt(2.0 * static_cast<double>(o.num_layers));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const TensorParallelLayout layout = tp_layout();
  // Every rank draws the whole tensor (same generator stream as TP = 1) and keeps its piece.
  auto add = [&](const std::string& name, at::IntArrayRef shape, double std, double fill) {
    const at::Tensor whole = draw_param(shape, std, fill, gen);
    at::Tensor piece = tp_piece(whole, layout.of(name), tp_rank(), tp_size());
    params_.push_back({name, piece.to(device_).requires_grad_(true)});
    return params_.back().tensor;
  };
  auto normal = [&](const std::string& name, at::IntArrayRef shape, double std) { return add(name, shape, std, 0.0); };
  auto constant = [&](const std::string& name, at::IntArrayRef shape, double value) {
    return add(name, shape, -1.0, value);
  };

  word_embeddings_ = normal("embedding.word_embeddings.weight", {o.vocab_size, h}, o.init_std);
  for (int64_t l = 0; l < o.num_layers; ++l) {
    const std::string p = "decoder.layers." + std::to_string(l) + ".";
    GptLayerParams layer;
    layer.input_layernorm = constant(p + "input_layernorm.weight", {h}, 1.0);
    layer.linear_qkv = normal(p + "self_attention.linear_qkv.weight", {qkv_rows, h}, o.init_std);
    if (o.add_qkv_bias) layer.linear_qkv_bias = constant(p + "self_attention.linear_qkv.bias", {qkv_rows}, 0.0);
    layer.linear_proj = normal(p + "self_attention.linear_proj.weight", {h, h}, out_std);
    layer.pre_mlp_layernorm = constant(p + "pre_mlp_layernorm.weight", {h}, 1.0);
    layer.linear_fc1 = normal(p + "mlp.linear_fc1.weight", {2 * o.ffn_hidden_size, h}, o.init_std);
    layer.linear_fc2 = normal(p + "mlp.linear_fc2.weight", {h, o.ffn_hidden_size}, out_std);
    layers_.push_back(layer);
  }
  final_layernorm_ = constant("decoder.final_layernorm.weight", {h}, 1.0);
  if (!o.tie_embeddings) output_layer_ = normal("output_layer.weight", {o.vocab_size, h}, o.init_std);
  rotary_ = make_rotary_tables(o.max_seq_length, d, o.rotary_base, device_);
}

TensorParallelLayout GptModel::tp_layout() const {
  TensorParallelLayout layout;
  layout.size = tp_size();
  if (layout.size == 1) return layout;
  const TpShard rows{TpCut::kRows, 1}, gate_up{TpCut::kRows, 2}, columns{TpCut::kColumns, 1};
  layout.shards["embedding.word_embeddings.weight"] = rows;
  for (int64_t l = 0; l < options_.num_layers; ++l) {
    const std::string p = "decoder.layers." + std::to_string(l) + ".";
    layout.shards[p + "self_attention.linear_qkv.weight"] = rows;
    if (options_.add_qkv_bias) layout.shards[p + "self_attention.linear_qkv.bias"] = rows;
    layout.shards[p + "self_attention.linear_proj.weight"] = columns;
    layout.shards[p + "mlp.linear_fc1.weight"] = gate_up;
    layout.shards[p + "mlp.linear_fc2.weight"] = columns;
  }
  if (!options_.tie_embeddings) layout.shards["output_layer.weight"] = rows;
  return layout;
}

at::Tensor GptModel::copy_to_tp(const at::Tensor& x) const {
  return tp_ == nullptr ? x : tp_copy_to_region(x, *tp_);
}

at::Tensor GptModel::reduce_from_tp(const at::Tensor& x) const {
  return tp_ == nullptr ? x : tp_reduce_from_region(x, *tp_);
}

SplitRegistry GptModel::splits() const {
  SplitRegistry reg;
  const GptOptions& o = options_;
  for (int64_t l = 0; l < o.num_layers; ++l) {
    const std::string p = "decoder.layers." + std::to_string(l) + ".";
    if (o.qkv_split != SplitGranularity::kNone) {
      reg.add(p + "self_attention.linear_qkv.weight",
              qkv_split_interleaved(o.num_attention_heads, o.num_query_groups, o.head_dim(), o.qkv_split));
    }
    reg.add(p + "mlp.linear_fc1.weight", gate_up_split(o.ffn_hidden_size));
  }
  return reg;
}

at::Tensor GptModel::check_tokens(const at::Tensor& t, const char* what) const {
  if (!t.defined() || t.dim() != 2 || t.scalar_type() != at::kLong || t.device() != device_ || t.size(1) < 1 ||
      t.size(1) > options_.max_seq_length) {
    const std::string got = t.defined() ? c10::str(t.sizes(), " ", t.scalar_type(), " on ", t.device()) : "undefined";
    throw ShapeError(std::string("GptModel: ") + what + " must be [B, S] int64 on " + device_.str() +
                     " with 1 <= S <= max_seq_length (" + std::to_string(options_.max_seq_length) + "), got " + got);
  }
  if (t.device().is_cpu() && t.numel() > 0) {
    const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
    if (lo < 0 || hi >= options_.vocab_size) {
      throw InvalidArgument(std::string("GptModel: ") + what +
                            " ids must lie in [0, vocab_size = " + std::to_string(options_.vocab_size) + "), got min " +
                            std::to_string(lo) + ", max " + std::to_string(hi));
    }
  }
  return t;
}

at::Tensor GptModel::forward(const at::Tensor& tokens) const {
  check_tokens(tokens, "tokens");
  const GptOptions& o = options_;
  const int64_t T = tp_size();
  const int64_t b = tokens.size(0), s = tokens.size(1), h = o.hidden_size, d = o.head_dim();
  // This rank's share of the heads (all of them without TP).
  const int64_t heads = o.num_attention_heads / T, groups = o.num_query_groups / T, q_per_group = heads / groups;
  const int64_t ffn = o.ffn_hidden_size / T;
  const std::vector<int64_t> norm_shape{h};

  at::Tensor x = tp_ == nullptr
                     ? at::embedding(word_embeddings_, tokens)  // [B, S, H]
                     : vocab_parallel_embedding(word_embeddings_, tokens, word_embeddings_.size(0) * tp_rank(), *tp_);
  for (const GptLayerParams& layer : layers_) {
    // Attention: the fused projection viewed as [B, S, groups, q_per_group + 2, d] (Megatron's layout).
    const at::Tensor hn = copy_to_tp(at::rms_norm(x, norm_shape, layer.input_layernorm, o.norm_epsilon));
    const at::Tensor qkv =
        at::linear(hn, layer.linear_qkv, layer.linear_qkv_bias).view({b, s, groups, q_per_group + 2, d});
    const at::Tensor q = qkv.narrow(3, 0, q_per_group).reshape({b, s, heads, d}).transpose(1, 2);
    const at::Tensor k = qkv.select(3, q_per_group).transpose(1, 2);      // [B, groups, S, d]
    const at::Tensor v = qkv.select(3, q_per_group + 1).transpose(1, 2);  // [B, groups, S, d]
    const at::Tensor attn = at::scaled_dot_product_attention(apply_rotary(q, rotary_), apply_rotary(k, rotary_), v,
                                                             /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true,
                                                             /*scale=*/std::nullopt, /*enable_gqa=*/groups != heads);
    x = x + reduce_from_tp(at::linear(attn.transpose(1, 2).reshape({b, s, heads * d}), layer.linear_proj));

    // MLP: SwiGLU on the fused [gate; up] projection (this rank's gate and up columns).
    const at::Tensor mn = copy_to_tp(at::rms_norm(x, norm_shape, layer.pre_mlp_layernorm, o.norm_epsilon));
    const at::Tensor fc1 = at::linear(mn, layer.linear_fc1);
    const at::Tensor act = at::silu(fc1.narrow(-1, 0, ffn)) * fc1.narrow(-1, ffn, ffn);
    x = x + reduce_from_tp(at::linear(act, layer.linear_fc2));
  }
  x = copy_to_tp(at::rms_norm(x, norm_shape, final_layernorm_, o.norm_epsilon));
  return at::linear(x, output_weight()).to(at::kFloat);
}

at::Tensor GptModel::loss(const at::Tensor& tokens, const at::Tensor& labels) const {
  check_tokens(labels, "labels");
  if (!tokens.defined() || labels.sizes() != tokens.sizes()) {
    throw ShapeError("GptModel::loss: labels " + c10::str(labels.sizes()) + " must have the shape of tokens " +
                     (tokens.defined() ? c10::str(tokens.sizes()) : std::string("(undefined)")));
  }
  const at::Tensor logits = forward(tokens);
  if (tp_ != nullptr) {
    const int64_t cols = logits.size(-1);
    return vocab_parallel_cross_entropy(logits.view({-1, cols}), labels.reshape({-1}), cols * tp_rank(), *tp_);
  }
  return at::cross_entropy_loss(logits.view({-1, options_.vocab_size}), labels.reshape({-1}));
}

int64_t GptModel::num_parameters() const {
  const TensorParallelLayout layout = tp_layout();
  int64_t n = 0;
  for (const auto& p : params_) n += p.tensor.numel() * (layout.of(p.name).cut == TpCut::kReplicated ? 1 : tp_size());
  return n;
}

double GptModel::flops_per_token(int64_t seq_length) const {
  if (seq_length < 1)
    throw InvalidArgument("flops_per_token: seq_length must be >= 1, got " + std::to_string(seq_length));
  // Logical sizes: every matmul weight is cut by T under TP.
  double matmul = static_cast<double>(output_weight().numel());
  for (const GptLayerParams& l : layers_) {
    matmul +=
        static_cast<double>(l.linear_qkv.numel() + l.linear_proj.numel() + l.linear_fc1.numel() + l.linear_fc2.numel());
  }
  matmul *= static_cast<double>(tp_size());
  const double attention = 12.0 * static_cast<double>(options_.num_layers) * static_cast<double>(seq_length) *
                           static_cast<double>(options_.hidden_size);
  return 6.0 * matmul + attention;
}

}  // namespace orthotron
