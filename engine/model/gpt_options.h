// gpt_options.h: the shape and initialization of the GPT decoder (the YAML `model` section). Plain
// data; the field table that reads it from YAML lives with the engine's config.
#pragma once

#include <cstdint>
#include <string>

#include "optim/split_registry.h"

namespace orthotron {

struct GptOptions {
  int64_t num_layers = 2;
  int64_t hidden_size = 128;
  int64_t num_attention_heads = 4;  ///< query heads
  int64_t num_query_groups = 2;     ///< key/value heads (grouped-query attention); = heads for MHA
  int64_t ffn_hidden_size = 352;    ///< SwiGLU width: linear_fc1 is [2 * ffn, hidden]
  int64_t vocab_size = 4096;        ///< the tokenizer's vocabulary (the engine sets it from the data)
  int64_t max_seq_length = 128;     ///< rotary tables are built for this many positions
  double rotary_base = 10000.0;
  double norm_epsilon = 1e-5;
  double init_std = 0.02;       ///< normal(0, std); output projections use std / sqrt(2 * num_layers)
  bool tie_embeddings = false;  ///< output_layer shares embedding.word_embeddings.weight
  bool add_qkv_bias = false;    ///< linear_qkv.bias (Qwen-style); Megatron's other linears have none here
  SplitGranularity qkv_split = SplitGranularity::kQkv;  ///< how Muon splits linear_qkv.weight

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

/// Checks every field: sizes positive, heads divisible by query groups, hidden divisible by heads,
/// an even head_dim (rotary pairs), rotary_base, norm_epsilon and init_std positive and finite.
/// ConfigError naming the field ("model.hidden_size") and its value. Blocking, no tensors.
void validate_gpt_options(const GptOptions& options);

/// The first broken rule among the shape's cross-field rules (heads divide the width, query groups
/// divide the heads, an even head dimension for rotary), as a message naming the fields; "" when
/// they hold. validate_gpt_options and the YAML field table both check these through it.
std::string gpt_shape_problem(const GptOptions& options);

}  // namespace orthotron
