// tp_layout.h: how a tensor-parallel rank's parameter relates to the whole (logical) parameter:
// the cut of each parameter across the TP ranks (Megatron's column- and row-parallel layouts), the
// logical shape behind a piece, the piece of a logical tensor and the logical tensor from its
// pieces, and which Muon split parts stay whole inside one piece. Pure index arithmetic and
// copies; no communication.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "optim/split_registry.h"

namespace orthotron {

/// How one parameter is cut across the T tensor-parallel ranks.
///   kReplicated: every rank holds the whole parameter (norms).
///   kRows:       dim 0 is cut. The logical rows are `blocks` equal consecutive blocks (1 for QKV in
///                Megatron's interleaved layout, where a rank's rows are whole query groups; 2 for
///                the fused [gate; up] of SwiGLU) and rank t holds rows [t R / (B T), (t + 1) R / (B T))
///                of every block, stacked in block order: column-parallel linears, the vocabulary-
///                parallel embedding and output layer.
///   kColumns:    dim 1 is cut evenly, rank t holding columns [t C / T, (t + 1) C / T): row-parallel
///                linears (attention output, MLP down projection).
enum class TpCut { kReplicated, kRows, kColumns };
std::string to_string(TpCut cut);

struct TpShard {
  TpCut cut = TpCut::kReplicated;
  int64_t blocks = 1;  ///< kRows only
  bool operator==(const TpShard& o) const { return cut == o.cut && blocks == o.blocks; }
};

/// The tensor-parallel layout of a model: its TP size and every cut parameter (a parameter without
/// an entry is replicated).
struct TensorParallelLayout {
  int size = 1;
  std::map<std::string, TpShard> shards;
  /// The entry of `name`, or a replicated TpShard.
  TpShard of(const std::string& name) const;
};

/// The logical shape of a parameter whose rank-local piece has `local` shape. ShapeError naming
/// `name` when a cut dimension is missing.
std::vector<int64_t> tp_logical_shape(const std::string& name, const std::vector<int64_t>& local, const TpShard& shard,
                                      int tp_size);

/// ConfigError-free check used by models: InvalidArgument naming `name`, the dimension and the TP
/// size when `logical` cannot be cut (a cut dimension not divisible by blocks x T).
void check_tp_divisible(const std::string& name, const std::vector<int64_t>& logical, const TpShard& shard,
                        int tp_size);

/// Rank `tp_rank`'s piece of the logical tensor `logical` (a contiguous copy).
at::Tensor tp_piece(const at::Tensor& logical, const TpShard& shard, int tp_rank, int tp_size);

/// The logical tensor from the pieces of every TP rank, in rank order (the inverse of tp_piece).
at::Tensor tp_assemble(const std::vector<at::Tensor>& pieces, const TpShard& shard);

/// The logical row indices (int64, CPU) that rank `tp_rank`'s piece holds, in piece order, for a
/// kRows cut of `logical_rows` rows.
at::Tensor tp_piece_rows(int64_t logical_rows, const TpShard& shard, int tp_rank, int tp_size);

/// Whether every part of `split` (over the logical rows) lies whole inside one TP rank's piece
/// under `shard`; when it does, Newton-Schulz can run on each piece alone. False for kColumns and
/// kReplicated cuts and for a null split.
bool tp_split_is_local(const ParamSplit* split, const TpShard& shard, int tp_size);

/// The parts rank `tp_rank`'s piece holds, with rows renumbered into the piece, in the logical
/// split's order. Only for a split where tp_split_is_local holds.
ParamSplit tp_local_split(const ParamSplit& split, const TpShard& shard, int tp_rank, int tp_size);

}  // namespace orthotron
