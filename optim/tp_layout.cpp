// tp_layout.cpp: the tensor-parallel cut of a parameter: logical shapes, pieces, assembly, local splits.
#include "optim/tp_layout.h"

#include <set>

#include "base/errors.h"

namespace orthotron {

std::string to_string(TpCut cut) {
  switch (cut) {
    case TpCut::kReplicated:
      return "replicated";
    case TpCut::kRows:
      return "rows";
    case TpCut::kColumns:
      return "columns";
  }
  return "?";
}

TpShard TensorParallelLayout::of(const std::string& name) const {
  auto it = shards.find(name);
  return it == shards.end() ? TpShard{} : it->second;
}

namespace {

int cut_dim(const TpShard& shard) {
  return shard.cut == TpCut::kRows ? 0 : 1;
}

// Rows per (block, rank) of a kRows cut.
int64_t rows_per_piece_block(int64_t logical_rows, const TpShard& shard, int tp_size) {
  return logical_rows / (shard.blocks * tp_size);
}

}  // namespace

std::vector<int64_t> tp_logical_shape(const std::string& name, const std::vector<int64_t>& local, const TpShard& shard,
                                      int tp_size) {
  if (shard.cut == TpCut::kReplicated) return local;
  const int dim = cut_dim(shard);
  if (static_cast<int>(local.size()) <= dim) {
    throw ShapeError("parameter '" + name + "' has shape " + c10::str(at::IntArrayRef(local)) + " but is cut by " +
                     to_string(shard.cut) + " across tensor-parallel ranks (needs dimension " + std::to_string(dim) +
                     ")");
  }
  std::vector<int64_t> out = local;
  out[static_cast<size_t>(dim)] *= tp_size;
  return out;
}

void check_tp_divisible(const std::string& name, const std::vector<int64_t>& logical, const TpShard& shard,
                        int tp_size) {
  if (shard.cut == TpCut::kReplicated) return;
  const int dim = cut_dim(shard);
  const int64_t parts = (shard.cut == TpCut::kRows ? shard.blocks : 1) * tp_size;
  if (static_cast<int>(logical.size()) <= dim || logical[static_cast<size_t>(dim)] % parts != 0) {
    throw InvalidArgument("parameter '" + name + "' of shape " + c10::str(at::IntArrayRef(logical)) +
                          " cannot be cut by " + to_string(shard.cut) + " into " + std::to_string(parts) +
                          " equal pieces (" + std::to_string(tp_size) + " tensor-parallel ranks" +
                          (shard.blocks > 1 ? " x " + std::to_string(shard.blocks) + " blocks" : std::string()) + ")");
  }
}

at::Tensor tp_piece(const at::Tensor& logical, const TpShard& shard, int tp_rank, int tp_size) {
  if (shard.cut == TpCut::kReplicated || tp_size == 1) return logical.contiguous();
  check_tp_divisible("(tp_piece)", logical.sizes().vec(), shard, tp_size);
  if (shard.cut == TpCut::kColumns) {
    const int64_t c = logical.size(1) / tp_size;
    return logical.narrow(1, tp_rank * c, c).contiguous();
  }
  const int64_t r = rows_per_piece_block(logical.size(0), shard, tp_size);
  const int64_t block_rows = logical.size(0) / shard.blocks;
  std::vector<at::Tensor> parts;
  for (int64_t b = 0; b < shard.blocks; ++b) parts.push_back(logical.narrow(0, b * block_rows + tp_rank * r, r));
  return at::cat(parts, 0).contiguous();
}

at::Tensor tp_assemble(const std::vector<at::Tensor>& pieces, const TpShard& shard) {
  if (pieces.empty()) throw InvalidArgument("tp_assemble: no pieces");
  if (shard.cut == TpCut::kReplicated || pieces.size() == 1) return pieces[0].contiguous();
  if (shard.cut == TpCut::kColumns) return at::cat(pieces, 1);
  const int64_t r = pieces[0].size(0) / shard.blocks;
  std::vector<at::Tensor> parts;
  for (int64_t b = 0; b < shard.blocks; ++b) {
    for (const auto& p : pieces) parts.push_back(p.narrow(0, b * r, r));
  }
  return at::cat(parts, 0);
}

at::Tensor tp_piece_rows(int64_t logical_rows, const TpShard& shard, int tp_rank, int tp_size) {
  const int64_t r = rows_per_piece_block(logical_rows, shard, tp_size);
  const int64_t block_rows = logical_rows / shard.blocks;
  std::vector<int64_t> rows;
  for (int64_t b = 0; b < shard.blocks; ++b) {
    for (int64_t i = 0; i < r; ++i) rows.push_back(b * block_rows + tp_rank * r + i);
  }
  return at::tensor(c10::ArrayRef<int64_t>(rows), at::TensorOptions().dtype(at::kLong));
}

namespace {

// The TP rank holding logical row `row` of a kRows cut.
int rank_of_row(int64_t row, int64_t logical_rows, const TpShard& shard, int tp_size) {
  const int64_t block_rows = logical_rows / shard.blocks;
  return static_cast<int>((row % block_rows) / rows_per_piece_block(logical_rows, shard, tp_size));
}

}  // namespace

bool tp_split_is_local(const ParamSplit* split, const TpShard& shard, int tp_size) {
  if (split == nullptr || shard.cut != TpCut::kRows) return false;
  if (split->rows % (shard.blocks * tp_size) != 0) return false;
  for (const auto& part : split->parts) {
    const at::Tensor rows = part.rows.contiguous();
    const int64_t* r = rows.data_ptr<int64_t>();
    std::set<int> holders;
    for (int64_t i = 0; i < rows.numel(); ++i) holders.insert(rank_of_row(r[i], split->rows, shard, tp_size));
    if (holders.size() != 1) return false;
  }
  return true;
}

ParamSplit tp_local_split(const ParamSplit& split, const TpShard& shard, int tp_rank, int tp_size) {
  if (!tp_split_is_local(&split, shard, tp_size)) {
    throw InvalidArgument("tp_local_split: the split's parts are not whole inside one tensor-parallel piece");
  }
  // Logical row -> index inside this rank's piece.
  const at::Tensor piece_rows = tp_piece_rows(split.rows, shard, tp_rank, tp_size);
  std::vector<int64_t> local_of(static_cast<size_t>(split.rows), -1);
  const int64_t* pr = piece_rows.data_ptr<int64_t>();
  for (int64_t i = 0; i < piece_rows.numel(); ++i) local_of[static_cast<size_t>(pr[i])] = i;
  ParamSplit out;
  out.rows = piece_rows.numel();
  for (const auto& part : split.parts) {
    const at::Tensor rows = part.rows.contiguous();
    const int64_t* r = rows.data_ptr<int64_t>();
    if (rank_of_row(r[0], split.rows, shard, tp_size) != tp_rank) continue;
    std::vector<int64_t> local(static_cast<size_t>(rows.numel()));
    for (int64_t i = 0; i < rows.numel(); ++i) local[static_cast<size_t>(i)] = local_of[static_cast<size_t>(r[i])];
    out.parts.push_back({part.name, at::tensor(c10::ArrayRef<int64_t>(local), at::TensorOptions().dtype(at::kLong))});
  }
  return out;
}

}  // namespace orthotron
