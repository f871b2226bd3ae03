// split_registry.h: how fused parameters split into the real matrices Muon must orthogonalize one
// by one (fused QKV in Megatron's per-group interleaved GQA layout or a plain [Q;K;V] block layout,
// fused SwiGLU gate/up). A split is a list of row-index maps; pure tensor indexing, no optimizer state.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "optim/param_routing.h"

namespace orthotron {

/// How finely a fused attention projection is split: `none` keeps the fused matrix, `qkv` gives
/// one Q, one K and one V matrix across heads (Megatron's default), `per_head` one matrix per head
/// (Dion, modded-nanogpt).
enum class SplitGranularity { kNone, kQkv, kPerHead };
std::string to_string(SplitGranularity g);
SplitGranularity parse_split_granularity(const std::string& s);  ///< InvalidArgument lists the valid names

/// One real matrix inside a fused 2-D parameter: the rows (indices into dim 0, in order) it is made
/// of. The part's matrix is param.index_select(0, rows): [rows.numel(), param.size(1)].
struct SplitPart {
  std::string name;  ///< "q", "k", "v", "q.head3", "gate", "up", ...
  at::Tensor rows;   ///< int64, CPU, 1-D
};

/// The parts of one fused parameter. Validated on registration: every row of dim 0 belongs to
/// exactly one part.
struct ParamSplit {
  std::vector<SplitPart> parts;
  int64_t rows = 0;  ///< the fused parameter's dim-0 size these parts partition
};

/// Megatron's fused QKV with grouped-query attention: rows = [groups, (q_per_group + 2) * head_dim];
/// within a group, q_per_group query heads, then one key head, then one value head.
/// num_heads query heads, num_kv_heads (= groups) key/value heads. Multi-head attention is num_kv_heads == num_heads.
ParamSplit qkv_split_interleaved(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, SplitGranularity g);

/// A plain block-stacked [Q; K; V]: num_heads*head_dim query rows, then num_kv_heads*head_dim key
/// rows, then as many value rows.
ParamSplit qkv_split_block(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, SplitGranularity g);

/// Fused SwiGLU [2*ffn, hidden]: gate rows [0, ffn), up rows [ffn, 2*ffn).
ParamSplit gate_up_split(int64_t ffn);

/// Fused parameters by name. A parameter with no entry is one matrix (or a batch, see muon_matrix_view).
class SplitRegistry {
 public:
  /// Registers `split` for `param_name`. InvalidArgument if the parts do not partition [0, split.rows)
  /// or the name is registered twice.
  void add(const std::string& param_name, ParamSplit split);
  /// The split of `param_name`, or nullptr.
  const ParamSplit* find(const std::string& param_name) const;
  /// ShapeError naming the parameter when a registered split does not fit its logical 2-D shape
  /// (a shard's rows, a flattened view or a transposed shape are refused).
  void check_fits(const std::string& param_name, const std::vector<int64_t>& shape) const;
  bool empty() const { return splits_.empty(); }
  const std::map<std::string, ParamSplit>& all() const { return splits_; }

 private:
  std::map<std::string, ParamSplit> splits_;
};

/// Checks that every registered split names a parameter routed to a Muon group and fits its
/// logical shape (the assignment's): RoutingError or ShapeError naming the parameter.
void check_split_routing(const std::vector<Assignment>& assignment, const std::vector<ParamGroup>& groups,
                         const SplitRegistry& splits);

/// The part's matrix gathered from `fused` ([rows, n]).
at::Tensor split_gather(const at::Tensor& fused, const SplitPart& part);
/// Writes `values` back into the part's rows of `fused` (in place).
void split_scatter(at::Tensor& fused, const SplitPart& part, const at::Tensor& values);

}  // namespace orthotron
