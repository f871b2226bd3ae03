// gpt_reference.cpp: the unfused, written-out GPT decoder.
#include "engine/model/gpt_reference.h"

#include <cmath>
#include <limits>
#include <map>
#include <string>

#include "base/errors.h"

namespace orthotron {

namespace {

struct QkvRows {
  int64_t q_per_group, d;
  int64_t q(int64_t head) const { return (head / q_per_group) * (q_per_group + 2) * d + (head % q_per_group) * d; }
  int64_t k(int64_t group) const { return group * (q_per_group + 2) * d + q_per_group * d; }
  int64_t v(int64_t group) const { return k(group) + d; }
};

QkvRows qkv_rows(const GptOptions& o) {
  return {o.num_attention_heads / o.num_query_groups, o.head_dim()};
}

at::Tensor leaf(const at::Tensor& t, at::ScalarType dtype) {
  return t.detach().to(at::kCPU, dtype).clone().requires_grad_(true);
}

at::Tensor rms_norm_ref(const at::Tensor& x, const at::Tensor& w, double eps) {
  return x / at::sqrt((x * x).mean({-1}, /*keepdim=*/true) + eps) * w;
}

// Rotates each channel pair (i, i + d/2) of x [B, S, d] at position p by the angle p * base^(-2i/d).
at::Tensor rotary_ref(const at::Tensor& x, double base) {
  const int64_t s = x.size(1), d = x.size(2), half = d / 2;
  at::Tensor angle = at::empty({s, half}, x.options().dtype(at::kDouble).requires_grad(false));
  auto a = angle.accessor<double, 2>();
  for (int64_t p = 0; p < s; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      a[p][i] = static_cast<double>(p) * std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    }
  }
  const at::Tensor c = angle.cos().to(x.scalar_type()), sn = angle.sin().to(x.scalar_type());
  const at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return at::cat({x1 * c - x2 * sn, x2 * c + x1 * sn}, -1);
}

at::Tensor project(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
  at::Tensor y = at::matmul(x, w.t());
  return bias.defined() ? y + bias : y;
}

}  // namespace

UnfusedGpt unfuse_gpt(const GptModel& model, at::ScalarType dtype) {
  const GptOptions& o = model.options();
  const QkvRows rows = qkv_rows(o);
  const int64_t d = o.head_dim(), ffn = o.ffn_hidden_size;
  UnfusedGpt w;
  w.options = o;
  w.word_embeddings = leaf(model.word_embeddings(), dtype);
  for (int64_t l = 0; l < o.num_layers; ++l) {
    const GptLayerParams& p = model.layer(l);
    UnfusedGptLayer u;
    u.input_layernorm = leaf(p.input_layernorm, dtype);
    for (int64_t j = 0; j < o.num_attention_heads; ++j) {
      u.q.push_back(leaf(p.linear_qkv.narrow(0, rows.q(j), d), dtype));
      if (o.add_qkv_bias) u.q_bias.push_back(leaf(p.linear_qkv_bias.narrow(0, rows.q(j), d), dtype));
    }
    for (int64_t g = 0; g < o.num_query_groups; ++g) {
      u.k.push_back(leaf(p.linear_qkv.narrow(0, rows.k(g), d), dtype));
      u.v.push_back(leaf(p.linear_qkv.narrow(0, rows.v(g), d), dtype));
      if (o.add_qkv_bias) {
        u.k_bias.push_back(leaf(p.linear_qkv_bias.narrow(0, rows.k(g), d), dtype));
        u.v_bias.push_back(leaf(p.linear_qkv_bias.narrow(0, rows.v(g), d), dtype));
      }
    }
    u.linear_proj = leaf(p.linear_proj, dtype);
    u.pre_mlp_layernorm = leaf(p.pre_mlp_layernorm, dtype);
    u.gate = leaf(p.linear_fc1.narrow(0, 0, ffn), dtype);
    u.up = leaf(p.linear_fc1.narrow(0, ffn, ffn), dtype);
    u.linear_fc2 = leaf(p.linear_fc2, dtype);
    w.layers.push_back(u);
  }
  w.final_layernorm = leaf(model.final_layernorm(), dtype);
  if (!o.tie_embeddings) w.output_layer = leaf(model.output_weight(), dtype);
  return w;
}

at::Tensor reference_forward(const UnfusedGpt& w, const at::Tensor& tokens) {
  const GptOptions& o = w.options;
  const at::Tensor ids = tokens.to(at::kCPU);
  const int64_t b = ids.size(0), s = ids.size(1), h = o.hidden_size, d = o.head_dim();
  const int64_t q_per_group = o.num_attention_heads / o.num_query_groups;
  const at::Tensor future = at::ones({s, s}, at::TensorOptions().dtype(at::kBool)).triu(1);  // key after query
  at::Tensor x = w.word_embeddings.index_select(0, ids.reshape({-1})).view({b, s, h});
  for (const UnfusedGptLayer& l : w.layers) {
    const at::Tensor hn = rms_norm_ref(x, l.input_layernorm, o.norm_epsilon);
    std::vector<at::Tensor> heads;
    for (int64_t j = 0; j < o.num_attention_heads; ++j) {
      const int64_t g = j / q_per_group;
      const at::Tensor none;
      const at::Tensor q = rotary_ref(project(hn, l.q[j], o.add_qkv_bias ? l.q_bias[j] : none), o.rotary_base);
      const at::Tensor k = rotary_ref(project(hn, l.k[g], o.add_qkv_bias ? l.k_bias[g] : none), o.rotary_base);
      const at::Tensor v = project(hn, l.v[g], o.add_qkv_bias ? l.v_bias[g] : none);
      const at::Tensor scores = at::matmul(q, k.transpose(1, 2)) / std::sqrt(static_cast<double>(d));  // [B, S, S]
      const at::Tensor probs = at::softmax(scores.masked_fill(future, -std::numeric_limits<double>::infinity()), -1);
      heads.push_back(at::matmul(probs, v));
    }
    x = x + at::matmul(at::cat(heads, -1), l.linear_proj.t());
    const at::Tensor mn = rms_norm_ref(x, l.pre_mlp_layernorm, o.norm_epsilon);
    const at::Tensor gate = at::matmul(mn, l.gate.t()), up = at::matmul(mn, l.up.t());
    x = x + at::matmul(gate * at::sigmoid(gate) * up, l.linear_fc2.t());
  }
  x = rms_norm_ref(x, w.final_layernorm, o.norm_epsilon);
  return at::matmul(x, (o.tie_embeddings ? w.word_embeddings : w.output_layer).t());
}

at::Tensor reference_loss(const UnfusedGpt& w, const at::Tensor& tokens, const at::Tensor& labels) {
  const at::Tensor logits = reference_forward(w, tokens).reshape({-1, w.options.vocab_size});
  const at::Tensor picked = logits.gather(1, labels.to(at::kCPU).reshape({-1, 1})).squeeze(1);
  return (at::logsumexp(logits, {1}) - picked).mean();
}

at::Tensor reference_forward_unfused(const GptModel& model, const at::Tensor& tokens) {
  return reference_forward(unfuse_gpt(model), tokens);
}

NamedParameters fused_gradients(const UnfusedGpt& w, const GptModel& model) {
  const GptOptions& o = model.options();
  const QkvRows rows = qkv_rows(o);
  const int64_t d = o.head_dim(), ffn = o.ffn_hidden_size;
  const at::ScalarType dtype = w.word_embeddings.scalar_type();
  auto grad = [](const at::Tensor& t) { return t.grad().defined() ? t.grad() : at::zeros_like(t); };
  std::map<const at::TensorImpl*, at::Tensor> by_param;  // the model tensor -> its fused gradient
  auto zeros = [&](const at::Tensor& like) {
    return by_param[like.unsafeGetTensorImpl()] = at::zeros(like.sizes(), at::TensorOptions().dtype(dtype));
  };
  zeros(model.word_embeddings()).copy_(grad(w.word_embeddings));
  for (int64_t l = 0; l < o.num_layers; ++l) {
    const GptLayerParams& p = model.layer(l);
    const UnfusedGptLayer& u = w.layers[static_cast<size_t>(l)];
    zeros(p.input_layernorm).copy_(grad(u.input_layernorm));
    at::Tensor qkv = zeros(p.linear_qkv);
    at::Tensor bias = o.add_qkv_bias ? zeros(p.linear_qkv_bias) : at::Tensor();
    for (int64_t j = 0; j < o.num_attention_heads; ++j) {
      qkv.narrow(0, rows.q(j), d).copy_(grad(u.q[j]));
      if (o.add_qkv_bias) bias.narrow(0, rows.q(j), d).copy_(grad(u.q_bias[j]));
    }
    for (int64_t g = 0; g < o.num_query_groups; ++g) {
      qkv.narrow(0, rows.k(g), d).copy_(grad(u.k[g]));
      qkv.narrow(0, rows.v(g), d).copy_(grad(u.v[g]));
      if (o.add_qkv_bias) {
        bias.narrow(0, rows.k(g), d).copy_(grad(u.k_bias[g]));
        bias.narrow(0, rows.v(g), d).copy_(grad(u.v_bias[g]));
      }
    }
    zeros(p.linear_proj).copy_(grad(u.linear_proj));
    zeros(p.pre_mlp_layernorm).copy_(grad(u.pre_mlp_layernorm));
    at::Tensor fc1 = zeros(p.linear_fc1);
    fc1.narrow(0, 0, ffn).copy_(grad(u.gate));
    fc1.narrow(0, ffn, ffn).copy_(grad(u.up));
    zeros(p.linear_fc2).copy_(grad(u.linear_fc2));
  }
  zeros(model.final_layernorm()).copy_(grad(w.final_layernorm));
  if (!o.tie_embeddings) zeros(model.output_weight()).copy_(grad(w.output_layer));

  NamedParameters out;
  for (const auto& p : model.parameters()) {
    const auto it = by_param.find(p.tensor.unsafeGetTensorImpl());
    if (it == by_param.end()) throw InvariantError("fused_gradients: no gradient assembled for " + p.name);
    out.push_back({p.name, it->second});
  }
  return out;
}

}  // namespace orthotron
