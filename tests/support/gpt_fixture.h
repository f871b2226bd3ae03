// gpt_fixture.h: GPT-shaped parameter sets for tests and benchmarks: fused QKV in Megatron's
// interleaved GQA layout, fused SwiGLU gate/up, embeddings, norms, biases, head; with the splits
// registered. Also the same model as shapes only, for owner plans at any size.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "optim/muon_batch.h"
#include "optim/owner_plan.h"
#include "optim/split_registry.h"

namespace orthotron::testing {

struct GptShape {
  int64_t layers = 2, hidden = 32, heads = 4, kv_heads = 2, ffn = 48, vocab = 64;
  int64_t head_dim() const { return hidden / heads; }
};

/// The benchmark GPT of bench/: 8 layers, hidden 512, GQA 8/4 heads, SwiGLU 1536, vocab 8192
/// (33.6M parameters).
inline GptShape benchmark_gpt_shape() {
  GptShape s;
  s.layers = 8;
  s.hidden = 512;
  s.heads = 8;
  s.kv_heads = 4;
  s.ffn = 1536;
  s.vocab = 8192;
  return s;
}

/// The 7B-shaped GPT of the scale issues: 32 layers, hidden 4096, GQA 32/8 heads, SwiGLU 11008,
/// vocab 32000.
inline GptShape seven_billion_gpt_shape() {
  GptShape s;
  s.layers = 32;
  s.hidden = 4096;
  s.heads = 32;
  s.kv_heads = 8;
  s.ffn = 11008;
  s.vocab = 32000;
  return s;
}

/// (name, shape) of every parameter, in model order.
inline std::vector<std::pair<std::string, std::vector<int64_t>>> gpt_shapes(const GptShape& s) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"embedding.word_embeddings.weight", {s.vocab, s.hidden}});
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "decoder.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", {s.hidden}});
    out.push_back({p + "self_attention.linear_qkv.weight", {(s.heads + 2 * s.kv_heads) * s.head_dim(), s.hidden}});
    out.push_back({p + "self_attention.linear_qkv.bias", {(s.heads + 2 * s.kv_heads) * s.head_dim()}});
    out.push_back({p + "self_attention.linear_proj.weight", {s.hidden, s.hidden}});
    out.push_back({p + "pre_mlp_layernorm.weight", {s.hidden}});
    out.push_back({p + "mlp.linear_fc1.weight", {2 * s.ffn, s.hidden}});
    out.push_back({p + "mlp.linear_fc2.weight", {s.hidden, s.ffn}});
  }
  out.push_back({"decoder.final_layernorm.weight", {s.hidden}});
  out.push_back({"output_layer.weight", {s.vocab, s.hidden}});
  return out;
}

/// The splits of every fused QKV and gate/up parameter of the model.
inline SplitRegistry gpt_splits(const GptShape& s, SplitGranularity g = SplitGranularity::kQkv) {
  SplitRegistry reg;
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "decoder.layers." + std::to_string(l) + ".";
    if (g != SplitGranularity::kNone) {
      reg.add(p + "self_attention.linear_qkv.weight", qkv_split_interleaved(s.heads, s.kv_heads, s.head_dim(), g));
    }
    reg.add(p + "mlp.linear_fc1.weight", gate_up_split(s.ffn));
  }
  return reg;
}

/// Independent copies of `src` (same names and values, fresh leaves requiring grad).
inline NamedParameters clone_params(const NamedParameters& src) {
  NamedParameters out;
  for (const auto& p : src) out.push_back({p.name, p.tensor.detach().clone().requires_grad_(true)});
  return out;
}

/// Random parameters (seeded), scaled to keep steps well-conditioned.
inline NamedParameters gpt_params(const GptShape& s, uint64_t seed) {
  at::manual_seed(seed);
  NamedParameters out;
  for (const auto& [name, shape] : gpt_shapes(s)) out.push_back({name, (at::randn(shape) * 0.05).requires_grad_(true)});
  return out;
}

/// The model's names and logical shapes, for plans that need no tensor.
inline std::vector<ParamShape> gpt_param_shapes(const GptShape& s) {
  std::vector<ParamShape> out;
  for (const auto& [name, shape] : gpt_shapes(s)) out.push_back({name, shape});
  return out;
}

/// The model as PlanParams under the default groups and routing rules: the same plan_params the
/// containers compute, from shapes alone.
inline std::vector<PlanParam> gpt_plan_params(const GptShape& s, const SplitRegistry& splits) {
  return plan_params(gpt_param_shapes(s), default_groups(), default_routing_rules(), splits);
}

}  // namespace orthotron::testing
