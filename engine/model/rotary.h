// rotary.h: rotary position embeddings (RoPE) in the rotate-half (GPT-NeoX, Megatron default) form:
// the tables and their application to query/key heads. Pure ATen; knows nothing of the model.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace orthotron {

/// cos and sin of position * inv_freq for positions [0, max_positions), each [max_positions, head_dim]:
/// channel i and i + head_dim/2 share the frequency base^(-2i/head_dim) (i < head_dim/2).
struct RotaryTables {
  at::Tensor cos;
  at::Tensor sin;
};

/// Builds the tables in float32 on `device` (angles computed in float64, then rounded).
/// InvalidArgument when head_dim is odd or not positive, max_positions < 1 or base <= 0.
RotaryTables make_rotary_tables(int64_t max_positions, int64_t head_dim, double base, at::Device device);

/// x [B, heads, S, head_dim] -> x * cos + rotate_half(x) * sin for positions [0, S), where
/// rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2]). Differentiable, not in place. The tables are
/// cast to x's dtype. ShapeError when S exceeds the tables or head_dim differs from theirs.
at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables);

}  // namespace orthotron
