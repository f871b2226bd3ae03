// split_registry.cpp: row-index maps for fused QKV and gate/up parameters.
#include "optim/split_registry.h"

#include "base/errors.h"

namespace orthotron {

std::string to_string(SplitGranularity g) {
  switch (g) {
    case SplitGranularity::kNone:
      return "none";
    case SplitGranularity::kQkv:
      return "qkv";
    case SplitGranularity::kPerHead:
      return "per_head";
  }
  return "?";
}

SplitGranularity parse_split_granularity(const std::string& s) {
  if (s == "none") return SplitGranularity::kNone;
  if (s == "qkv") return SplitGranularity::kQkv;
  if (s == "per_head") return SplitGranularity::kPerHead;
  throw InvalidArgument("unknown split granularity '" + s + "'; expected one of: none qkv per_head");
}

namespace {

at::Tensor rows_of(const std::vector<int64_t>& v) {
  return at::tensor(c10::ArrayRef<int64_t>(v), at::TensorOptions().dtype(at::kLong));
}

void check_heads(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim) {
  if (num_heads < 1 || num_kv_heads < 1 || head_dim < 1 || num_heads % num_kv_heads != 0) {
    throw InvalidArgument("QKV split: num_heads (" + std::to_string(num_heads) + ") must be a positive multiple of " +
                          "num_kv_heads (" + std::to_string(num_kv_heads) + "), head_dim (" + std::to_string(head_dim) +
                          ") >= 1");
  }
}

// Builds the split from the row lists of every query, key and value head, each in head order.
ParamSplit from_heads(const std::vector<std::vector<int64_t>>& q, const std::vector<std::vector<int64_t>>& k,
                      const std::vector<std::vector<int64_t>>& v, int64_t total_rows, SplitGranularity g) {
  ParamSplit s;
  s.rows = total_rows;
  if (g == SplitGranularity::kNone) {
    std::vector<int64_t> all(static_cast<size_t>(total_rows));
    for (int64_t i = 0; i < total_rows; ++i) all[static_cast<size_t>(i)] = i;
    s.parts.push_back({"qkv", rows_of(all)});
    return s;
  }
  auto add = [&](const std::string& base, const std::vector<std::vector<int64_t>>& heads) {
    if (g == SplitGranularity::kPerHead) {
      for (size_t h = 0; h < heads.size(); ++h)
        s.parts.push_back({base + ".head" + std::to_string(h), rows_of(heads[h])});
    } else {
      std::vector<int64_t> all;
      for (const auto& h : heads) all.insert(all.end(), h.begin(), h.end());
      s.parts.push_back({base, rows_of(all)});
    }
  };
  add("q", q);
  add("k", k);
  add("v", v);
  return s;
}

std::vector<int64_t> range(int64_t begin, int64_t count) {
  std::vector<int64_t> r(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) r[static_cast<size_t>(i)] = begin + i;
  return r;
}

}  // namespace

ParamSplit qkv_split_interleaved(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, SplitGranularity g) {
  check_heads(num_heads, num_kv_heads, head_dim);
  const int64_t q_per_group = num_heads / num_kv_heads;
  const int64_t group_rows = (q_per_group + 2) * head_dim;
  std::vector<std::vector<int64_t>> q, k, v;
  for (int64_t grp = 0; grp < num_kv_heads; ++grp) {
    const int64_t base = grp * group_rows;
    for (int64_t h = 0; h < q_per_group; ++h) q.push_back(range(base + h * head_dim, head_dim));
    k.push_back(range(base + q_per_group * head_dim, head_dim));
    v.push_back(range(base + (q_per_group + 1) * head_dim, head_dim));
  }
  return from_heads(q, k, v, num_kv_heads * group_rows, g);
}

ParamSplit qkv_split_block(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, SplitGranularity g) {
  check_heads(num_heads, num_kv_heads, head_dim);
  std::vector<std::vector<int64_t>> q, k, v;
  for (int64_t h = 0; h < num_heads; ++h) q.push_back(range(h * head_dim, head_dim));
  const int64_t k0 = num_heads * head_dim, v0 = k0 + num_kv_heads * head_dim;
  for (int64_t h = 0; h < num_kv_heads; ++h) {
    k.push_back(range(k0 + h * head_dim, head_dim));
    v.push_back(range(v0 + h * head_dim, head_dim));
  }
  return from_heads(q, k, v, v0 + num_kv_heads * head_dim, g);
}

ParamSplit gate_up_split(int64_t ffn) {
  if (ffn < 1) throw InvalidArgument("gate/up split: ffn size must be >= 1, got " + std::to_string(ffn));
  ParamSplit s;
  s.rows = 2 * ffn;
  s.parts.push_back({"gate", rows_of(range(0, ffn))});
  s.parts.push_back({"up", rows_of(range(ffn, ffn))});
  return s;
}

void SplitRegistry::add(const std::string& param_name, ParamSplit split) {
  if (splits_.count(param_name)) throw InvalidArgument("split for parameter '" + param_name + "' registered twice");
  std::vector<int> seen(static_cast<size_t>(split.rows), 0);
  for (const auto& p : split.parts) {
    const auto rows = p.rows.contiguous();
    const int64_t* r = rows.data_ptr<int64_t>();
    for (int64_t i = 0; i < rows.numel(); ++i) {
      if (r[i] < 0 || r[i] >= split.rows || seen[static_cast<size_t>(r[i])]++) {
        throw InvalidArgument("split of parameter '" + param_name + "': part '" + p.name + "' row " +
                              std::to_string(r[i]) + " is outside [0, " + std::to_string(split.rows) +
                              ") or claimed twice");
      }
    }
  }
  for (int64_t i = 0; i < split.rows; ++i) {
    if (!seen[static_cast<size_t>(i)]) {
      throw InvalidArgument("split of parameter '" + param_name + "': row " + std::to_string(i) +
                            " belongs to no part");
    }
  }
  splits_.emplace(param_name, std::move(split));
}

const ParamSplit* SplitRegistry::find(const std::string& param_name) const {
  auto it = splits_.find(param_name);
  return it == splits_.end() ? nullptr : &it->second;
}

void SplitRegistry::check_fits(const std::string& param_name, const std::vector<int64_t>& shape) const {
  const ParamSplit* s = find(param_name);
  if (s == nullptr) return;
  if (shape.size() != 2 || shape[0] != s->rows) {
    throw ShapeError("split registered for parameter '" + param_name + "' covers " + std::to_string(s->rows) +
                     " rows of a 2-D matrix, but the parameter has shape " + c10::str(c10::IntArrayRef(shape)) +
                     " (splits apply to the whole parameter's logical shape, never to a shard's)");
  }
}

void check_split_routing(const std::vector<Assignment>& assignment, const std::vector<ParamGroup>& groups,
                         const SplitRegistry& splits) {
  for (const auto& [name, split] : splits.all()) {
    size_t i = 0;
    while (i < assignment.size() && assignment[i].param != name) ++i;
    if (i == assignment.size()) {
      throw RoutingError("a split is registered for '" + name + "', which is not a parameter");
    }
    const ParamGroup& g = groups[assignment[i].group_index];
    if (g.algorithm != Algorithm::kMuon) {
      throw RoutingError("parameter '" + name + "' has a split registered but is routed to AdamW group '" + g.name +
                         "'");
    }
    splits.check_fits(name, assignment[i].shape);
  }
}

at::Tensor split_gather(const at::Tensor& fused, const SplitPart& part) {
  return fused.index_select(0, part.rows.to(fused.device()));
}

void split_scatter(at::Tensor& fused, const SplitPart& part, const at::Tensor& values) {
  fused.index_copy_(0, part.rows.to(fused.device()), values);
}

}  // namespace orthotron
